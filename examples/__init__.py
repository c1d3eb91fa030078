"""Example crewline project: workflows a solo operator runs."""
