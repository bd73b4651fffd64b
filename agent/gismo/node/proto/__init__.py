"""The kubelet device-plugin API ``v1beta1`` (``api.proto``, Apache-2.0: see LICENSE and NOTICE here).

``api_pb2*.py(i)`` are generated code, committed: regenerate with ``make protos`` (a test checks that
they match a fresh generation from ``api.proto``).
"""
