"""Local AWS emulator for tests and `make demo`: moto server with its own Lambda dispatch off.

Pinned to the moto version in dev/requirements.txt; the two patches below touch moto internals
of that version and are checked at start-up, so a moto upgrade that moves them fails loudly.

Why the patches: moto cannot run Lambda functions (it needs Docker), yet it tries to.
1. With an event source mapping on a table, every stream write calls the mapped function and,
   when that "succeeds", empties the stream. Our tests and the demo read the stream themselves
   (they play the event source mapping), so the records must stay.
2. PutEvents that matches a rule with a Lambda target raises NotImplementedError (HTTP 500).
   Real EventBridge delivers asynchronously and PutEvents never fails because of a target, so
   Lambda targets are skipped here; SQS targets are still delivered (the demo's tap queue).
"""

import argparse
import sys

import moto
from moto.awslambda import models as lambda_models
from moto.events import models as events_models
from moto.server import main as moto_main

EXPECTED_MOTO = "5.2.1"


def _no_lambda_stream_dispatch(self, function_arn, items, source):  # noqa: ARG001
    return None  # keep the stream's records: nothing was delivered


def _patch():
    if moto.__version__ != EXPECTED_MOTO:
        sys.exit(f"dev/moto_server.py is written for moto {EXPECTED_MOTO}, found {moto.__version__}")
    if not hasattr(lambda_models.LambdaBackend, "send_dynamodb_items"):
        sys.exit("moto internals moved: LambdaBackend.send_dynamodb_items is gone")
    if not hasattr(events_models.Rule, "send_to_targets"):
        sys.exit("moto internals moved: events Rule.send_to_targets is gone")

    lambda_models.LambdaBackend.send_dynamodb_items = _no_lambda_stream_dispatch

    original = events_models.Rule.send_to_targets

    def send_to_targets(self, original_event, transform_input=True):
        targets = self.targets
        self.targets = [t for t in targets if ":lambda:" not in t.get("Arn", "")]
        try:
            return original(self, original_event, transform_input)
        finally:
            self.targets = targets

    events_models.Rule.send_to_targets = send_to_targets


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default="5055")
    args = parser.parse_args()
    _patch()
    moto_main(["-H", args.host, "-p", str(args.port)])
