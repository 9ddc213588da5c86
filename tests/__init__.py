# A package, so that tests can share helper modules (`from tests.oracles import ...`) and
# scripts/ can import the same mpmath oracle (`tests.accuracy`) instead of duplicating it.
