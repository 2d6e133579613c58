
from daflow.core.verbs import callable_package

callable_package(__name__, "causal")  # daflow.causal(...) is the API verb even once this package is imported
