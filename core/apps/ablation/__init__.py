"""The paper's table 7 in miniature: every combination of CA, LCAG and VI, trained and scored alike."""
