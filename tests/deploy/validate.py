#!/usr/bin/env python3
"""Validate deployment files against the published shapes (run by tests/deploy.rs).

  validate.py compose FILE       the Compose specification JSON schema (compose_spec.json, as
                                 shipped in the docker-compose 1.29.2 package)
  validate.py ecs-task FILE      the ECS RegisterTaskDefinition input shape (botocore's model)
  validate.py ecs-service FILE   the ECS CreateService input shape

Prints "ok" and exits 0, or prints one line per problem and exits 1. Needs the virtualenv made
by ensure_deploy_validators in scripts/lib.sh.
"""
import importlib.util
import json
import os
import sys


def compose(path):
    import jsonschema
    import yaml

    package = importlib.util.find_spec("compose").submodule_search_locations[0]
    with open(os.path.join(package, "config", "compose_spec.json")) as f:
        schema = json.load(f)
    with open(path) as f:
        document = yaml.safe_load(f)
    validator = jsonschema.Draft201909Validator(schema)
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
        for e in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]


def ecs(path, operation):
    import botocore.session
    from botocore.exceptions import ParamValidationError
    from botocore.validate import validate_parameters

    shape = botocore.session.get_session().get_service_model("ecs").operation_model(operation).input_shape
    with open(path) as f:
        params = json.load(f)
    try:
        validate_parameters(params, shape)
    except ParamValidationError as e:
        return [line for line in str(e).splitlines() if line.strip()]
    return []


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    kind, path = sys.argv[1], sys.argv[2]
    checks = {
        "compose": compose,
        "ecs-task": lambda p: ecs(p, "RegisterTaskDefinition"),
        "ecs-service": lambda p: ecs(p, "CreateService"),
    }
    if kind not in checks:
        sys.exit(__doc__)
    problems = checks[kind](path)
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
