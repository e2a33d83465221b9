"""The GPU catalog: datasheet figures a roofline needs, one entry per accelerator.

Every figure is per GPU, in base units (FLOP/s, bytes, bytes/s). Peak compute is *dense* bf16
(NVIDIA datasheets quote "with sparsity" figures twice as large; those are not used here).
``nvlink_bytes_per_s`` is the datasheet's scale-up figure, which counts both directions (an
H100's "900 GB/s" is 18 links of 25 GB/s each way); collectives use one direction, half of it.
Network bandwidth is one GPU's share of the scale-out fabric (one NIC per GPU in the HGX/DGX
reference designs). ``host_bytes_per_s`` is the GPU's host link (PCIe), one direction: what
offloading weights and optimizer state to CPU memory crosses. Prices are indicative on-demand
list prices and can be overridden with ``hardware.price_per_gpu_hour``; ``None`` where no
public list price was found.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

GB = 1e9
TB = 1e12
#: PCIe 5.0 x16: 32 GT/s x 16 lanes with 128b/130b coding, about 63 GB/s each way
#: (PCI-SIG PCIe 5.0 specification); PCIe 4.0 x16 is half of it.
PCIE5_X16 = 63 * GB
PCIE4_X16 = 31.5 * GB


class GpuSpec(BaseModel):
    """One accelerator as the simulator sees it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    peak_flops: float = Field(gt=0, description="dense bf16 FLOP/s")
    hbm_bytes: float = Field(gt=0)
    hbm_bytes_per_s: float = Field(gt=0)
    nvlink_bytes_per_s: float = Field(
        gt=0, description="per GPU scale-up bandwidth, datasheet figure (both directions)"
    )
    network_bytes_per_s: float = Field(gt=0, description="per GPU scale-out bandwidth")
    host_bytes_per_s: float = Field(gt=0, description="host link (PCIe), one direction")
    gpus_per_node: int = Field(gt=0)
    price_per_gpu_hour: float | None = Field(default=None, ge=0)

    @property
    def nvlink_one_way_bytes_per_s(self) -> float:
        """What one GPU can send over its scale-up links in one direction."""
        return self.nvlink_bytes_per_s / 2.0


CATALOG: dict[str, GpuSpec] = {
    # NVIDIA H100 Tensor Core GPU datasheet (SXM5): BF16 989 TFLOPS dense (1,979 with
    # sparsity), 80 GB HBM3 at 3.35 TB/s, NVLink 900 GB/s, PCIe Gen5 x16; DGX H100: 8 GPUs,
    # 8x ConnectX-7 400 Gb/s (50 GB/s per GPU). Price: Lambda on-demand H100 SXM, about
    # $2.99/GPU-hour.
    "H100": GpuSpec(
        name="H100 SXM 80GB",
        peak_flops=989e12,
        hbm_bytes=80 * GB,
        hbm_bytes_per_s=3.35 * TB,
        nvlink_bytes_per_s=900 * GB,
        network_bytes_per_s=50 * GB,
        host_bytes_per_s=PCIE5_X16,
        gpus_per_node=8,
        price_per_gpu_hour=2.99,
    ),
    # NVIDIA H200 Tensor Core GPU datasheet (SXM): BF16 989 TFLOPS dense, 141 GB HBM3e at
    # 4.8 TB/s, NVLink 900 GB/s, PCIe Gen5 x16; HGX H200: 8 GPUs, 400 Gb/s per GPU.
    "H200": GpuSpec(
        name="H200 SXM 141GB",
        peak_flops=989e12,
        hbm_bytes=141 * GB,
        hbm_bytes_per_s=4.8 * TB,
        nvlink_bytes_per_s=900 * GB,
        network_bytes_per_s=50 * GB,
        host_bytes_per_s=PCIE5_X16,
        gpus_per_node=8,
    ),
    # NVIDIA H800 SXM5 (the export variant of the H100, NVIDIA H800 product brief): the H100's
    # BF16 989 TFLOPS dense and 80 GB HBM3 at 3.35 TB/s, NVLink cut to 400 GB/s, PCIe Gen5 x16;
    # 8 GPUs per HGX board, 400 Gb/s InfiniBand per GPU. DeepSeek-V3 technical report (arXiv
    # 2412.19437, section 3.2.2) measures 160 GB/s over H800 NVLink against 50 GB/s over IB.
    "H800": GpuSpec(
        name="H800 SXM 80GB",
        peak_flops=989e12,
        hbm_bytes=80 * GB,
        hbm_bytes_per_s=3.35 * TB,
        nvlink_bytes_per_s=400 * GB,
        network_bytes_per_s=50 * GB,
        host_bytes_per_s=PCIE5_X16,
        gpus_per_node=8,
    ),
    # NVIDIA A100 Tensor Core GPU datasheet (80GB SXM): BF16 312 TFLOPS dense, 80 GB HBM2e at
    # 2,039 GB/s, NVLink 600 GB/s, PCIe Gen4 x16; DGX A100: 8 GPUs, 8x 200 Gb/s HDR (25 GB/s
    # per GPU). Price: Lambda on-demand A100 SXM 80GB, about $1.79/GPU-hour.
    "A100-80GB": GpuSpec(
        name="A100 SXM 80GB",
        peak_flops=312e12,
        hbm_bytes=80 * GB,
        hbm_bytes_per_s=2.039 * TB,
        nvlink_bytes_per_s=600 * GB,
        network_bytes_per_s=25 * GB,
        host_bytes_per_s=PCIE4_X16,
        gpus_per_node=8,
        price_per_gpu_hour=1.79,
    ),
    # NVIDIA A800 SXM4 80GB (the export variant of the A100, NVIDIA A800 datasheet): the A100's
    # BF16 312 TFLOPS dense and 80 GB HBM2e at 2,039 GB/s, NVLink cut to 400 GB/s, PCIe Gen4
    # x16; 8 GPUs per HGX board, 200 Gb/s HDR per GPU as in DGX A100.
    "A800": GpuSpec(
        name="A800 SXM 80GB",
        peak_flops=312e12,
        hbm_bytes=80 * GB,
        hbm_bytes_per_s=2.039 * TB,
        nvlink_bytes_per_s=400 * GB,
        network_bytes_per_s=25 * GB,
        host_bytes_per_s=PCIE4_X16,
        gpus_per_node=8,
    ),
    # NVIDIA H20 (HGX H20 product brief): BF16 148 TFLOPS dense, 96 GB HBM3 at 4.0 TB/s,
    # NVLink 900 GB/s, PCIe Gen5 x16; 8 GPUs per HGX board, 400 Gb/s per GPU.
    "H20": GpuSpec(
        name="H20 96GB",
        peak_flops=148e12,
        hbm_bytes=96 * GB,
        hbm_bytes_per_s=4.0 * TB,
        nvlink_bytes_per_s=900 * GB,
        network_bytes_per_s=50 * GB,
        host_bytes_per_s=PCIE5_X16,
        gpus_per_node=8,
    ),
    # NVIDIA HGX B200 datasheet: per GPU BF16 2.25 PFLOPS dense (4.5 with sparsity), 180 GB
    # HBM3e at 8 TB/s, fifth-generation NVLink 1.8 TB/s, PCIe Gen5 x16 (DGX B200); DGX B200:
    # 8 GPUs, 400 Gb/s per GPU. Price: Lambda on-demand B200, about $4.99/GPU-hour.
    "B200": GpuSpec(
        name="B200 180GB",
        peak_flops=2.25e15,
        hbm_bytes=180 * GB,
        hbm_bytes_per_s=8 * TB,
        nvlink_bytes_per_s=1.8 * TB,
        network_bytes_per_s=50 * GB,
        host_bytes_per_s=PCIE5_X16,
        gpus_per_node=8,
        price_per_gpu_hour=4.99,
    ),
    # AMD Instinct MI300X datasheet (OAM): BF16 1,307.4 TFLOPS dense (2,614.9 with sparsity),
    # 192 GB HBM3 at 5.3 TB/s, 7 Infinity Fabric links of 128 GB/s (both directions) to the
    # other GPUs of the platform, 896 GB/s in all, PCIe Gen5 x16; AMD Instinct MI300X platform:
    # 8 GPUs, one 400 Gb/s NIC per GPU in the reference design.
    "MI300X": GpuSpec(
        name="MI300X 192GB",
        peak_flops=1307.4e12,
        hbm_bytes=192 * GB,
        hbm_bytes_per_s=5.3 * TB,
        nvlink_bytes_per_s=896 * GB,
        network_bytes_per_s=50 * GB,
        host_bytes_per_s=PCIE5_X16,
        gpus_per_node=8,
    ),
}
