#!/usr/bin/env bash
# Set up what running the project needs on a fresh Debian machine with Python 3.11: Debian's
# Fashion-MNIST and jemalloc packages (as root), a virtualenv in .venv, torch from the wheels on local disk, the
# package (editable). `--test` adds the test extras (hypothesis) for `pytest`. It starts nothing: the
# Slurm test cluster is started by .ci/run (bash ci/slurm.sh), or by tests/test_slurm.py when it runs.
set -euo pipefail
extras=""
[ "${1:-}" = --test ] && extras="[test]"
cd "$(dirname "$0")/.."

if ! ls /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte* >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist' (or set REPRODUCE_DATA to a folder with its IDX files)" >&2
  fi
fi
# jemalloc: `python -m reproduce` trains under it where it is installed (reproduce/allocator.py), and
# under glibc's malloc, up to a fifth slower, where not; so a failed install is only a warning.
if ! /sbin/ldconfig -p 2>/dev/null | grep 'libjemalloc\.so\.2 ' >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjemalloc2 >/dev/null; } ||
      echo "warning: libjemalloc2 not installed; training runs under glibc's malloc" >&2
  else
    echo "jemalloc missing: run 'sudo apt-get install libjemalloc2' (training runs under glibc's malloc until then)" >&2
  fi
fi

python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
case "$(uname -m)" in
  x86_64) torch="torch==2.14.1 torchvision==0.29.1" ;;  # on local disk for Python 3.11
  *) torch="torch==2.9.1 torchvision==0.24.1" ;;
esac
.venv/bin/python -m pip install -q --disable-pip-version-check $torch
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extras"
echo "setup done: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')"
