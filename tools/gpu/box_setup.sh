# Sourced by the scripts that run on a bare CUDA box with torch and Triton but none of
# stalesim's other dependencies and no network (the `device` machines this project is lent).
# Installs the wheels carried in .whl/ into $SITE_DIR, maps the checkout as the `stalesim`
# package under $PKG_DIR (the package layout of pyproject.toml, no build step), records the
# card, and defines log() and stalesim(). Needs $OUT; run from the repository root.
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 STALESIM_QUIET=0
SITE_DIR=${SITE_DIR:-/tmp/site}
PKG_DIR=${PKG_DIR:-/tmp/pkg}
started=$(date +%s)
log() { echo "[$(($(date +%s) - started)) s] $*" | tee -a "$OUT/log.txt"; }

if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --root-user-action=ignore --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE_DIR" .whl/*.whl 2>&1 | tail -3 | tee -a "$OUT/log.txt" ||
        for w in .whl/*.whl; do
            python3 -m pip install -q --root-user-action=ignore --no-index --no-deps --no-compile --target "$SITE_DIR" "$w" ||
                log "could not install $w"
        done
fi
mkdir -p "$PKG_DIR/stalesim"
for part in common cli sim kernels validate reports; do ln -sfn "$PWD/$part" "$PKG_DIR/stalesim/$part"; done
export PYTHONPATH="$PKG_DIR:$SITE_DIR"

if command -v nvidia-smi >/dev/null; then
    nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw \
        --format=csv | tee -a "$OUT/log.txt"
else
    log "no nvidia-smi on this machine"
fi
python3 -c "import torch, triton, polars, pydantic; print('torch', torch.__version__, 'triton', triton.__version__, 'polars', polars.__version__, 'pydantic', pydantic.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')" 2>&1 | tee -a "$OUT/log.txt"

stalesim() { python3 -c 'import sys; from stalesim.cli import main; sys.argv[0] = "stalesim"; main()' "$@"; }
