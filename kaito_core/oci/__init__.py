"""One OCI module: references, credentials, plain-HTTP rules, verified pulls and pushes.

Everything in kaito that reads or writes a registry goes through here: the init containers'
``python -m kaito_core.artifacts pull``, the runtime's adapter loading, and tuning's data pull
and adapter push. No torch; ``requests`` is imported only when a registry is contacted.
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
