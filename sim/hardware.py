"""The GPU catalog: datasheet figures a roofline needs, one entry per accelerator.

Every figure is per GPU, in base units (FLOP/s, bytes, bytes/s). Peak compute is *dense* bf16
(NVIDIA datasheets quote "with sparsity" figures twice as large; those are not used here).
Network bandwidth is one GPU's share of the scale-out fabric (one NIC per GPU in the HGX/DGX
reference designs). Prices are indicative on-demand list prices and can be overridden with
``hardware.price_per_gpu_hour``; ``None`` where no public list price was found.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

GB = 1e9
TB = 1e12


class GpuSpec(BaseModel):
    """One accelerator as the simulator sees it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    peak_flops: float = Field(gt=0, description="dense bf16 FLOP/s")
    hbm_bytes: float = Field(gt=0)
    hbm_bytes_per_s: float = Field(gt=0)
    nvlink_bytes_per_s: float = Field(gt=0, description="per GPU, one direction")
    network_bytes_per_s: float = Field(gt=0, description="per GPU scale-out bandwidth")
    gpus_per_node: int = Field(gt=0)
    price_per_gpu_hour: float | None = Field(default=None, ge=0)


CATALOG: dict[str, GpuSpec] = {
    # NVIDIA H100 Tensor Core GPU datasheet (SXM5): BF16 989 TFLOPS dense (1,979 with
    # sparsity), 80 GB HBM3 at 3.35 TB/s, NVLink 900 GB/s; DGX H100: 8 GPUs, 8x ConnectX-7
    # 400 Gb/s (50 GB/s per GPU). Price: Lambda on-demand H100 SXM, about $2.99/GPU-hour.
    "H100": GpuSpec(
        name="H100 SXM 80GB",
        peak_flops=989e12,
        hbm_bytes=80 * GB,
        hbm_bytes_per_s=3.35 * TB,
        nvlink_bytes_per_s=900 * GB,
        network_bytes_per_s=50 * GB,
        gpus_per_node=8,
        price_per_gpu_hour=2.99,
    ),
    # NVIDIA H200 Tensor Core GPU datasheet (SXM): BF16 989 TFLOPS dense, 141 GB HBM3e at
    # 4.8 TB/s, NVLink 900 GB/s; HGX H200: 8 GPUs, 400 Gb/s per GPU.
    "H200": GpuSpec(
        name="H200 SXM 141GB",
        peak_flops=989e12,
        hbm_bytes=141 * GB,
        hbm_bytes_per_s=4.8 * TB,
        nvlink_bytes_per_s=900 * GB,
        network_bytes_per_s=50 * GB,
        gpus_per_node=8,
    ),
    # NVIDIA A100 Tensor Core GPU datasheet (80GB SXM): BF16 312 TFLOPS dense, 80 GB HBM2e at
    # 2,039 GB/s, NVLink 600 GB/s; DGX A100: 8 GPUs, 8x 200 Gb/s HDR (25 GB/s per GPU).
    # Price: Lambda on-demand A100 SXM 80GB, about $1.79/GPU-hour.
    "A100-80GB": GpuSpec(
        name="A100 SXM 80GB",
        peak_flops=312e12,
        hbm_bytes=80 * GB,
        hbm_bytes_per_s=2.039 * TB,
        nvlink_bytes_per_s=600 * GB,
        network_bytes_per_s=25 * GB,
        gpus_per_node=8,
        price_per_gpu_hour=1.79,
    ),
    # NVIDIA H20 (HGX H20 product brief): BF16 148 TFLOPS dense, 96 GB HBM3 at 4.0 TB/s,
    # NVLink 900 GB/s; 8 GPUs per HGX board, 400 Gb/s per GPU.
    "H20": GpuSpec(
        name="H20 96GB",
        peak_flops=148e12,
        hbm_bytes=96 * GB,
        hbm_bytes_per_s=4.0 * TB,
        nvlink_bytes_per_s=900 * GB,
        network_bytes_per_s=50 * GB,
        gpus_per_node=8,
    ),
    # NVIDIA HGX B200 datasheet: per GPU BF16 2.25 PFLOPS dense (4.5 with sparsity), 180 GB
    # HBM3e at 8 TB/s, fifth-generation NVLink 1.8 TB/s; DGX B200: 8 GPUs, 400 Gb/s per GPU.
    # Price: Lambda on-demand B200, about $4.99/GPU-hour.
    "B200": GpuSpec(
        name="B200 180GB",
        peak_flops=2.25e15,
        hbm_bytes=180 * GB,
        hbm_bytes_per_s=8 * TB,
        nvlink_bytes_per_s=1.8 * TB,
        network_bytes_per_s=50 * GB,
        gpus_per_node=8,
        price_per_gpu_hour=4.99,
    ),
}
