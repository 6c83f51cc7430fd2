"""One OCI module: references, credentials, plain-HTTP rules, verified pulls and pushes.

Everything in kaito that reads or writes a registry goes through here: the init containers'
``python -m kaito_core.artifacts pull``, the runtime's adapter loading, and tuning's data pull
and adapter push. No torch; ``requests`` is imported only when a registry is contacted.

- References: ``REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]``; a pin wins over the tag
  (:mod:`~kaito_core.oci.reference`).
- Layouts read: images with a ``/data`` folder (upstream KAITO's adapter images, ``docker
  build`` data images) and ORAS artifacts with titled layers (:mod:`~kaito_core.oci.layout`).
  Pushed: upstream's adapter image layout (:mod:`~kaito_core.oci.push`).
- Verified: the manifest against a pin (or ``Docker-Content-Digest``), every blob against its
  digest and size, a cap on bytes downloaded and unpacked, tar members that would leave the
  target refused, and nothing half-written left behind (:mod:`~kaito_core.oci.pull`).
- Credentials, in this order: the docker configs given (mounted ``dockerconfigjson`` Secrets),
  ``KAITO_OCI_USERNAME``/``KAITO_OCI_PASSWORD``, ``$DOCKER_CONFIG/config.json``,
  ``~/.docker/config.json`` (:mod:`~kaito_core.oci.credentials`).
- Settings: ``KAITO_INSECURE_REGISTRIES``, ``KAITO_OCI_INSECURE``, ``KAITO_OCI_MAX_BYTES``,
  ``KAITO_OCI_CONNECT_TIMEOUT``, ``KAITO_OCI_READ_TIMEOUT``, ``KAITO_OCI_RETRIES``
  (:mod:`~kaito_core.oci.settings`).
"""

from kaito_core.oci.credentials import Credential, load_docker_config
from kaito_core.oci.credentials import find as find_credentials
from kaito_core.oci.errors import OCIError, UnsafeArchiveError, VerificationError
from kaito_core.oci.pull import Pulled, pull
from kaito_core.oci.push import push_data_image, push_files
from kaito_core.oci.reference import Reference, looks_like_reference, parse_reference
from kaito_core.oci.settings import Limits, is_insecure, limits

__all__ = ["Credential", "Limits", "OCIError", "Pulled", "Reference", "UnsafeArchiveError", "VerificationError",
           "find_credentials", "is_insecure", "limits", "load_docker_config", "looks_like_reference",
           "parse_reference", "pull", "push_data_image", "push_files"]
