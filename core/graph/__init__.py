"""The declarative pair graph and the graph engine that turns it into a training plan.

``pair_graph`` reads and checks the YAML; ``engine`` builds the central-alignment star,
the stages (with the parameter groups each trains and freezes), the multi-flow round
order, the generation tasks and the cost against pairwise alignment; ``plan_text`` and
``plan_drawing`` show a plan as text, JSON and a picture; ``shipped`` finds the graphs
installed with medm2g.
"""
