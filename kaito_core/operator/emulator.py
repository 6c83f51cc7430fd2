"""Moved: the API emulator is :mod:`kaito_core.testing.emulator` (strict kube-apiserver rules only;
status is written through ``/status``). This name stays for importers not yet moved
(bench/operator_scale.py); new code imports kaito_core.testing.emulator."""

from kaito_core.testing.emulator import Emulator, start_operator, stop_operator, with_identity

__all__ = ["Emulator", "start_operator", "stop_operator", "with_identity"]
