"""Any-to-any generation from a trained run (section 3.5 of the paper): conditions in, samples out."""
