# Sourced by the device scripts (bench/gpu_check.sh, scripts/gpu_train.sh) with `default_out`
# set: their output folder is the first argument unless it is an option (which is then shifted
# off the caller's arguments), else $OUT (the device machine's), else $default_out. The folder is
# made, and `out` holds its absolute path.
out="${OUT:-$default_out}"
if [[ $# -gt 0 && "$1" != -* ]]; then
    out="$1"
    shift
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
