"""Schemathesis hooks for the admin API run (tests/schemathesis.rs).

A watch (`?watch=` with any value but 0 or false, as Kubernetes reads it) answers a stream that
lasts until the client goes away, not one document; generated list requests that would start one
are sent as plain lists instead. kubectl's own watch is proven in tests/kubectl.rs.
"""

import schemathesis


def _watches(value):
    if value is None:
        return False
    if isinstance(value, list):
        return any(_watches(v) for v in value)
    text = str(value)
    return not (text == "0" or text.lower() == "false")


@schemathesis.hook
def before_call(ctx, case, kwargs):
    query = case.query
    if isinstance(query, dict) and _watches(query.get("watch")):
        query["watch"] = "false"


# CPython 3.11's parser can raise "SystemError: AST constructor recursion depth mismatch" when
# Hypothesis parses a lambda's source deep in a stack (the coverage phase's filters do), which
# aborts that operation's run. The source is only used for a strategy's repr: fall back to a
# plain name instead of losing the operation.
try:
    from hypothesis.internal import lambda_sources as _lambda_sources

    _describe = _lambda_sources.lambda_description

    def _lambda_description(f):
        try:
            return _describe(f)
        except SystemError:
            return "lambda"

    _lambda_sources.lambda_description = _lambda_description
except (ImportError, AttributeError):
    pass
