# Sourced by the bench/gpu*.sh scripts: the package on PYTHONPATH and, on the GPU machine
# (which has torch but not our other dependencies), the wheels carried in .whl/ installed into
# /tmp/site ahead of it. GPU_SH_DRY=1 (a CPU dry run) installs nothing; there GPU_SH_SITE, when
# set, is put ahead of the package instead.
if [ "${GPU_SH_DRY:-0}" != 1 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=${GPU_SH_SITE:+$GPU_SH_SITE:}$PWD
fi
