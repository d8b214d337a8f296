"""Schemathesis hooks for .ci/schemathesis: real ids as examples.

Most routes act as an agent the caller's account owns and name a thread it
can see. The document states the shape of those ids (an AID is 50
lowercase hex, a thread id a UUID), but no document can name the ones that
exist: the CI server makes them at startup. Generated from the shape alone,
nearly every case is 403 or 404 and never reaches the code behind. This
hook adds the live ids (from the environment, set by .ci/schemathesis) to
the loaded document as `examples`, which the examples and coverage phases
use as valid values; the fuzzing phase draws them from the dictionaries in
the config file the script writes. The document the server serves is left
as it is.
"""

import os

import schemathesis

AGENT = os.environ["THREADLINE_FUZZ_AGENT"]
PEER = os.environ["THREADLINE_FUZZ_PEER"]
ACSP_THREAD = os.environ["THREADLINE_FUZZ_ACSP_THREAD"]
STATUS_THREAD = os.environ["THREADLINE_FUZZ_STATUS_THREAD"]
TURN_THREAD = os.environ["THREADLINE_FUZZ_TURN_THREAD"]


def _thread_for(name):
    """The thread for the request body schema or the path `name`: status
    changes go to a thread of their own (a closed thread takes no
    messages), the turn-taking actions to a turn-taking one."""
    if name == "SetStatusBody":
        return STATUS_THREAD
    if name == "PostMessageBody" or name.startswith("/api/acsp"):
        return ACSP_THREAD
    return TURN_THREAD


def _add_example(schema, value):
    # Response schemas get them too (Message has a thread_id): harmless,
    # examples only steer generation.
    if isinstance(schema, dict):
        schema["examples"] = [value]


@schemathesis.hook
def before_load_schema(context, raw_schema):
    for name, schema in raw_schema.get("components", {}).get("schemas", {}).items():
        properties = schema.get("properties", {})
        if "aid" in properties:
            _add_example(properties["aid"], AGENT)
        if "target_aid" in properties:
            _add_example(properties["target_aid"], PEER)
        if "thread_id" in properties:
            _add_example(properties["thread_id"], _thread_for(name))
    for path, item in raw_schema.get("paths", {}).items():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                if parameter.get("name") == "aid":
                    _add_example(parameter.get("schema"), AGENT)
                elif parameter.get("name") == "thread_id":
                    _add_example(parameter.get("schema"), _thread_for(path))
