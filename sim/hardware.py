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

Training speed is per GPU too. ``matmul_efficiency`` is the measured share of the dense bf16
peak that a large matrix multiply reaches on the card (its "maximum achievable matmul FLOPS").
A training step is modelled as its GEMMs at that rate plus memory-bound work (norms,
activations, softmax, optimizer, casts) that moves a fixed number of HBM bytes per model FLOP
(:data:`MEMORY_BYTES_PER_FLOP`, fitted to two GPUs running the same FSDP training code, see
:data:`TRAINING_MEASUREMENTS`). So a card with little compute next to its bandwidth (H20: 148
TFLOP/s against 4 TB/s) reaches a larger share of its peak than an H100 (989 against 3.35):
:attr:`GpuSpec.train_mfu` and :attr:`GpuSpec.forward_mfu` give each card's figures.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

GB = 1e9
TB = 1e12
#: PCIe 5.0 x16: 32 GT/s x 16 lanes with 128b/130b coding, about 63 GB/s each way
#: (PCI-SIG PCIe 5.0 specification); PCIe 4.0 x16 is half of it.
PCIE5_X16 = 63 * GB
PCIE4_X16 = 31.5 * GB

#: Training with activation checkpointing (verl's and OpenRLHF's actor default) runs each
#: forward twice: 8 FLOPs per parameter and token on the hardware for the 6 that MFU counts.
RECOMPUTE_FACTOR = 4.0 / 3.0


@dataclass(frozen=True)
class TrainingMeasurement:
    """One row of a per-GPU training throughput table, with the card it ran on."""

    gpu: str
    mfu: float  # as the source counts it: full (non-causal) attention FLOPs
    params: float
    layers: int
    d_model: int
    seq_len: int
    peak_flops: float
    hbm_bytes_per_s: float
    matmul_efficiency: float

    @property
    def causal_mfu(self) -> float:
        """The same throughput with the simulator's FLOP count, ``6 N + 6 L d T`` per token
        (causal attention), instead of the source's ``6 N + 12 L d T``."""
        linear = 6.0 * self.params
        attention = 6.0 * self.layers * self.d_model * self.seq_len
        return self.mfu * (linear + attention) / (linear + 2.0 * attention)


#: MosaicML llm-foundry, scripts/train/benchmarking/README.md: MPT-7B (6,667,247,616
#: parameters, 32 layers, d_model 4096), sequence length 4096, 8 GPUs, PyTorch FSDP FULL_SHARD,
#: bf16, activation checkpointing on: MFU 54.84 in the "A100 80GB" table, 40.42 in the
#: "H100 80GB BF16" table. Same code, model and shapes on both cards.
TRAINING_MEASUREMENTS = (
    TrainingMeasurement(
        "A100-80GB", 0.5484, 6_667_247_616, 32, 4096, 4096, 312e12, 2.039e12, 0.869
    ),
    TrainingMeasurement("H100", 0.4042, 6_667_247_616, 32, 4096, 4096, 989e12, 3.35e12, 0.803),
)


def _fit_memory_bytes_per_flop() -> float:
    # 1 / mfu = RECOMPUTE_FACTOR / matmul_efficiency + b * peak / bandwidth; least squares in b
    num = den = 0.0
    for m in TRAINING_MEASUREMENTS:
        ridge = m.peak_flops / m.hbm_bytes_per_s
        rest = 1.0 / m.causal_mfu - RECOMPUTE_FACTOR / m.matmul_efficiency
        num += ridge * rest
        den += ridge * ridge
    return num / den


#: HBM bytes of memory-bound work per model FLOP of a training step (about 0.0033; fitted to
#: :data:`TRAINING_MEASUREMENTS`, which it reproduces within 4%).
MEMORY_BYTES_PER_FLOP = _fit_memory_bytes_per_flop()


def train_mfu(peak_flops: float, hbm_bytes_per_s: float, matmul_efficiency: float) -> float:
    """Training MFU (activation checkpointing on): the step's GEMMs, recomputed forward
    included, at ``matmul_efficiency`` of peak, plus :data:`MEMORY_BYTES_PER_FLOP` per model
    FLOP at the HBM bandwidth."""
    return 1.0 / (
        RECOMPUTE_FACTOR / matmul_efficiency + MEMORY_BYTES_PER_FLOP * peak_flops / hbm_bytes_per_s
    )


def forward_mfu(peak_flops: float, hbm_bytes_per_s: float, matmul_efficiency: float) -> float:
    """MFU of a forward-only pass (old-policy or reference log-probs): the same GEMMs and
    memory-bound work per FLOP as training, with nothing recomputed."""
    return 1.0 / (1.0 / matmul_efficiency + MEMORY_BYTES_PER_FLOP * peak_flops / hbm_bytes_per_s)


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
    matmul_efficiency: float = Field(
        gt=0, le=1, description="measured bf16 matmul FLOP/s over peak (maximum achievable)"
    )

    @property
    def train_mfu(self) -> float:
        """Training FLOP/s over peak (see :func:`train_mfu`)."""
        return train_mfu(self.peak_flops, self.hbm_bytes_per_s, self.matmul_efficiency)

    @property
    def forward_mfu(self) -> float:
        """Forward-only FLOP/s over peak (see :func:`forward_mfu`)."""
        return forward_mfu(self.peak_flops, self.hbm_bytes_per_s, self.matmul_efficiency)

    @property
    def nvlink_one_way_bytes_per_s(self) -> float:
        """What one GPU can send over its scale-up links in one direction."""
        return self.nvlink_bytes_per_s / 2.0


#: Matmul efficiencies: Stas Bekman, ml-engineering, compute/accelerator/README.md, "Maximum Achievable Matmul FLOPS comparison table", BF16 (mamf-finder.py, mean of 100 iterations at the best shape).
CATALOG: dict[str, GpuSpec] = {
    # NVIDIA H100 Tensor Core GPU datasheet (SXM5): BF16 989 TFLOPS dense (1,979 with
    # sparsity), 80 GB HBM3 at 3.35 TB/s, NVLink 900 GB/s, PCIe Gen5 x16; DGX H100: 8 GPUs,
    # 8x ConnectX-7 400 Gb/s (50 GB/s per GPU). Price: Lambda on-demand H100 SXM, about
    # $2.99/GPU-hour.
    # Matmul: 794.5 of 989 TFLOPS (80.3%), H100 SXM row of the MAMF table.
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
        matmul_efficiency=0.803,
    ),
    # NVIDIA H200 Tensor Core GPU datasheet (SXM): BF16 989 TFLOPS dense, 141 GB HBM3e at
    # 4.8 TB/s, NVLink 900 GB/s, PCIe Gen5 x16; HGX H200: 8 GPUs, 400 Gb/s per GPU.
    # Matmul: the H100 SXM row of the MAMF table, marked "H200 is the same" (80.3%).
    "H200": GpuSpec(
        name="H200 SXM 141GB",
        peak_flops=989e12,
        hbm_bytes=141 * GB,
        hbm_bytes_per_s=4.8 * TB,
        nvlink_bytes_per_s=900 * GB,
        network_bytes_per_s=50 * GB,
        host_bytes_per_s=PCIE5_X16,
        gpus_per_node=8,
        matmul_efficiency=0.803,
    ),
    # NVIDIA H800 SXM5 (the export variant of the H100, NVIDIA H800 product brief): the H100's
    # BF16 989 TFLOPS dense and 80 GB HBM3 at 3.35 TB/s, NVLink cut to 400 GB/s, PCIe Gen5 x16;
    # 8 GPUs per HGX board, 400 Gb/s InfiniBand per GPU. DeepSeek-V3 technical report (arXiv
    # 2412.19437, section 3.2.2) measures 160 GB/s over H800 NVLink against 50 GB/s over IB.
    # Matmul: the H100 die and clocks; the H100 SXM row of the MAMF table (80.3%).
    "H800": GpuSpec(
        name="H800 SXM 80GB",
        peak_flops=989e12,
        hbm_bytes=80 * GB,
        hbm_bytes_per_s=3.35 * TB,
        nvlink_bytes_per_s=400 * GB,
        network_bytes_per_s=50 * GB,
        host_bytes_per_s=PCIE5_X16,
        gpus_per_node=8,
        matmul_efficiency=0.803,
    ),
    # NVIDIA A100 Tensor Core GPU datasheet (80GB SXM): BF16 312 TFLOPS dense, 80 GB HBM2e at
    # 2,039 GB/s, NVLink 600 GB/s, PCIe Gen4 x16; DGX A100: 8 GPUs, 8x 200 Gb/s HDR (25 GB/s
    # per GPU). Price: Lambda on-demand A100 SXM 80GB, about $1.79/GPU-hour.
    # Matmul: 271.2 of 312 TFLOPS (86.9%), A100 SXM row of the MAMF table.
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
        matmul_efficiency=0.869,
    ),
    # NVIDIA A800 SXM4 80GB (the export variant of the A100, NVIDIA A800 datasheet): the A100's
    # BF16 312 TFLOPS dense and 80 GB HBM2e at 2,039 GB/s, NVLink cut to 400 GB/s, PCIe Gen4
    # x16; 8 GPUs per HGX board, 200 Gb/s HDR per GPU as in DGX A100.
    # Matmul: the A100 die and clocks; the A100 SXM row of the MAMF table (86.9%).
    "A800": GpuSpec(
        name="A800 SXM 80GB",
        peak_flops=312e12,
        hbm_bytes=80 * GB,
        hbm_bytes_per_s=2.039 * TB,
        nvlink_bytes_per_s=400 * GB,
        network_bytes_per_s=25 * GB,
        host_bytes_per_s=PCIE4_X16,
        gpus_per_node=8,
        matmul_efficiency=0.869,
    ),
    # NVIDIA H20 (HGX H20 product brief): BF16 148 TFLOPS dense, 96 GB HBM3 at 4.0 TB/s,
    # NVLink 900 GB/s, PCIe Gen5 x16; 8 GPUs per HGX board, 400 Gb/s per GPU.
    # Matmul: no public measurement found; the Hopper SM and cuBLAS kernels of the H100, so
    # the H100 SXM row of the MAMF table (80.3%) is assumed.
    "H20": GpuSpec(
        name="H20 96GB",
        peak_flops=148e12,
        hbm_bytes=96 * GB,
        hbm_bytes_per_s=4.0 * TB,
        nvlink_bytes_per_s=900 * GB,
        network_bytes_per_s=50 * GB,
        host_bytes_per_s=PCIE5_X16,
        gpus_per_node=8,
        matmul_efficiency=0.803,
    ),
    # NVIDIA HGX B200 datasheet: per GPU BF16 2.25 PFLOPS dense (4.5 with sparsity), 180 GB
    # HBM3e at 8 TB/s, fifth-generation NVLink 1.8 TB/s, PCIe Gen5 x16 (DGX B200); DGX B200:
    # 8 GPUs, 400 Gb/s per GPU. Price: Lambda on-demand B200, about $4.99/GPU-hour.
    # Matmul: 1,745 of 2,250 TFLOPS (77.6%), B200 SXM row of the MAMF table.
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
        matmul_efficiency=0.776,
    ),
    # AMD Instinct MI300X datasheet (OAM): BF16 1,307.4 TFLOPS dense (2,614.9 with sparsity),
    # 192 GB HBM3 at 5.3 TB/s, 7 Infinity Fabric links of 128 GB/s (both directions) to the
    # other GPUs of the platform, 896 GB/s in all, PCIe Gen5 x16; AMD Instinct MI300X platform:
    # 8 GPUs, one 400 Gb/s NIC per GPU in the reference design.
    # Matmul: 668.4 of 1,300 TFLOPS (51.4%), MI300X row of the MAMF table (ROCm 6.3,
    # PYTORCH_TUNABLEOP_ENABLED=1).
    "MI300X": GpuSpec(
        name="MI300X 192GB",
        peak_flops=1307.4e12,
        hbm_bytes=192 * GB,
        hbm_bytes_per_s=5.3 * TB,
        nvlink_bytes_per_s=896 * GB,
        network_bytes_per_s=50 * GB,
        host_bytes_per_s=PCIE5_X16,
        gpus_per_node=8,
        matmul_efficiency=0.514,
    ),
}
