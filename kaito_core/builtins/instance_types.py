"""Built-in GPU instance catalogs: Azure (the SKUs upstream KAITO supports) and AWS (g5, p4d, p5).

Facts from KAITO-REFERENCE.md ("Sizing facts"): GPU count and memory per GPU. vCPUs and host
memory (GiB) are each type's published spec (pod memory requests are kept under it); prices are
not shipped (they change by region and month), so sizing ranks types by GPU memory and GPU count
instead (see docs/sizing.md).
"""

from __future__ import annotations

from kaito_core.hookspecs import hookimpl
from kaito_core.types import InstanceType


# CUDA compute capability per GPU model (NVIDIA's published table): vLLM needs >= 8.0 for bfloat16.
COMPUTE_CAPABILITY = {"V100": 7.0, "A100": 8.0, "A10": 8.6, "A10G": 8.6, "H100": 9.0, "H200": 9.0}


def _azure(name: str, gpus: int, per_gpu: float, model: str, vcpus: int, memory: float,
           nvlink: bool = False) -> InstanceType:
    return InstanceType(name=f"Standard_{name}", cloud="azure", gpu_count=gpus, gpu_memory_gib=per_gpu,
                        gpu_model=model, vcpus=vcpus, memory_gib=memory, nvlink=nvlink,
                        compute_capability=COMPUTE_CAPABILITY[model])


def _aws(name: str, gpus: int, per_gpu: float, model: str, vcpus: int, memory: float,
         nvlink: bool = False) -> InstanceType:
    return InstanceType(name=name, cloud="aws", gpu_count=gpus, gpu_memory_gib=per_gpu, gpu_model=model,
                        vcpus=vcpus, memory_gib=memory, nvlink=nvlink, compute_capability=COMPUTE_CAPABILITY[model])


AZURE = (
    # A10 (NVadsA10 v5)
    _azure("NV36ads_A10_v5", 1, 24, "A10", 36, 440),
    _azure("NV72ads_A10_v5", 2, 24, "A10", 72, 880),
    # A100 80GB PCIe (NC A100 v4)
    _azure("NC24ads_A100_v4", 1, 80, "A100", 24, 220),
    _azure("NC48ads_A100_v4", 2, 80, "A100", 48, 440),
    _azure("NC96ads_A100_v4", 4, 80, "A100", 96, 880),
    # A100 SXM (ND A100 v4: 40GB; NDm A100 v4: 80GB), NVLink inside the node
    _azure("ND96asr_A100_v4", 8, 40, "A100", 96, 900, nvlink=True),
    _azure("ND96amsr_A100_v4", 8, 80, "A100", 96, 1900, nvlink=True),
    # H100 NVL 94GB (NC H100 v5) and H100/H200 SXM (ND H100 v5, ND H200 v5)
    _azure("NC40ads_H100_v5", 1, 94, "H100", 40, 320),
    _azure("NC80adis_H100_v5", 2, 94, "H100", 80, 640),
    _azure("ND96isr_H100_v5", 8, 80, "H100", 96, 1900, nvlink=True),
    _azure("ND96isr_H200_v5", 8, 141, "H200", 96, 1850, nvlink=True),
    # V100 16GB (NCv3): older, still used by upstream's examples
    _azure("NC6s_v3", 1, 16, "V100", 6, 112),
    _azure("NC12s_v3", 2, 16, "V100", 12, 224),
    _azure("NC24s_v3", 4, 16, "V100", 24, 448),
)

AWS = (
    _aws("g5.xlarge", 1, 24, "A10G", 4, 16),
    _aws("g5.2xlarge", 1, 24, "A10G", 8, 32),
    _aws("g5.4xlarge", 1, 24, "A10G", 16, 64),
    _aws("g5.8xlarge", 1, 24, "A10G", 32, 128),
    _aws("g5.16xlarge", 1, 24, "A10G", 64, 256),
    _aws("g5.12xlarge", 4, 24, "A10G", 48, 192),
    _aws("g5.24xlarge", 4, 24, "A10G", 96, 384),
    _aws("g5.48xlarge", 8, 24, "A10G", 192, 768),
    _aws("p4d.24xlarge", 8, 40, "A100", 96, 1152, nvlink=True),
    _aws("p5.48xlarge", 8, 80, "H100", 192, 2048, nvlink=True),
)

CATALOG = AZURE + AWS


@hookimpl
def kaito_register_instance_types(register):
    for it in CATALOG:
        register(it)
