"""``medm2g demo``: the main job end to end, the folder a newcomer opens first."""
