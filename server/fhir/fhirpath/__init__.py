"""The FHIRPath engine: one parser, one type model and one set of semantics, compiling
invariants, SearchParameter expressions and FHIRPath Patch paths into closures.

* :mod:`.parser` — the tokenizer and parser (FHIRPath N1 as R4 uses it) into a tuple AST;
* :mod:`.values` — typed nodes and collections: truth, equality, equivalence, ordering;
* :mod:`.type_model` — members and type sets read off the R4 element model;
* :mod:`.navigation` — compiled pieces, member steps and type filters;
* :mod:`.operators`, :mod:`.functions` — the operators and functions;
* :mod:`.compiler` — the compiler and its entry points, re-exported here.
"""

from server.fhir.fhirpath.compiler import (
    SEARCH,
    Evaluator,
    compile_fhirpath,
    compile_search_expression,
    compile_tree,
    output_types,
    search_root_keys,
)
from server.fhir.fhirpath.errors import FhirPathError, FhirPathSyntaxError
from server.fhir.fhirpath.parser import Ast, parse
from server.fhir.fhirpath.values import Node, holds

__all__ = [
    "SEARCH",
    "Ast",
    "Evaluator",
    "FhirPathError",
    "FhirPathSyntaxError",
    "Node",
    "compile_fhirpath",
    "compile_search_expression",
    "compile_tree",
    "holds",
    "output_types",
    "parse",
    "search_root_keys",
]
