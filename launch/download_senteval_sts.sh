#!/usr/bin/env bash
# Download the SentEval STS data (STS12-16, STS Benchmark, SICK) into DIR, in the layout
# distilface_jax.evaluation.sts reads:  DIR/STS/STS1{2..6}-en-test/, DIR/STS/STSBenchmark/, DIR/SICK/.
#
#   bash launch/download_senteval_sts.sh data/senteval
#   python -m distilface_jax.evaluate --model MODEL --sts-dir data/senteval
set -euo pipefail

SIMCSE_TAR_URL="https://huggingface.co/datasets/princeton-nlp/datasets-for-simcse/resolve/main/senteval.tar"
# Original releases, as SentEval's data/downstream/get_transfer_data.bash fetches them.
STSWIKI="http://ixa2.si.ehu.eus/stswiki/images"
STSB_URL="$STSWIKI/4/48/Stsbenchmark.tar.gz"
SICK_URL="http://alt.qcri.org/semeval2014/task1/data/uploads"

usage() {
  cat <<'EOF'
Usage: download_senteval_sts.sh [--source simcse|original] [--force] DIR

Downloads the SentEval STS evaluation data into DIR:
  DIR/STS/STS12-en-test ... DIR/STS/STS16-en-test   STS.input.<subset>.txt + STS.gs.<subset>.txt
  DIR/STS/STSBenchmark/sts-{train,dev,test}.csv
  DIR/SICK/SICK_{train,trial,test_annotated}.txt

Options:
  --source simcse    (default) SimCSE's ready-made SentEval tarball from the Hugging Face hub
                     (princeton-nlp/datasets-for-simcse, senteval.tar): the exact files SimCSE's
                     published numbers use (Moses-tokenized, STS lowercased). Only STS/ and
                     SICK/ are kept from it.
  --source original  the original SemEval / STS-B / SICK releases, as SentEval's
                     get_transfer_data.bash fetches them, rearranged into the same layout but NOT
                     Moses-tokenized or lowercased (scores differ slightly from published ones;
                     old mirrors, may be offline).
  --force            replace DIR/STS and DIR/SICK if they already exist.
  -h, --help         show this help.

Needs curl (or wget), tar, and for --source original also unzip.
EOF
}

WORK=""  # scratch folder inside DIR; global so the EXIT trap still sees it after main returns

die() { echo "error: $*" >&2; exit 2; }

fetch() {  # fetch URL OUT
  if command -v curl >/dev/null 2>&1; then
    curl --fail --location --retry 3 --output "$2" "$1"
  elif command -v wget >/dev/null 2>&1; then
    wget --tries=3 --output-document="$2" "$1"
  else
    die "need curl or wget to download $1"
  fi
}

from_simcse() {  # from_simcse WORK DEST
  local work=$1 dest=$2 root
  fetch "$SIMCSE_TAR_URL" "$work/senteval.tar"
  tar -xf "$work/senteval.tar" -C "$work"
  # Find the folder that holds STS/ and SICK/ rather than trusting the tarball's top level.
  root=$(find "$work" -maxdepth 4 -type d -name STS12-en-test -path '*/STS/*' -print -quit)
  [[ -n "$root" ]] || die "senteval.tar has no STS/STS12-en-test folder"
  root=$(dirname "$(dirname "$root")")
  [[ -d "$root/SICK" ]] || die "senteval.tar has no SICK folder next to STS"
  mv "$root/STS" "$dest/STS"
  mv "$root/SICK" "$dest/SICK"
}

from_original() {  # from_original WORK DEST
  local work=$1 dest=$2 year subdir url
  command -v unzip >/dev/null 2>&1 || die "--source original needs unzip"
  mkdir -p "$dest/STS" "$dest/SICK"
  # year:zip path under $STSWIKI:folder inside the zip (SentEval's STS_paths / STS_subdirs)
  for entry in 12:4/40/STS2012-en-test.zip:test-gold 13:2/2f/STS2013-en-test.zip:test-gs \
               14:8/8c/STS2014-en-test.zip:sts-en-test-gs-2014 \
               15:d/da/STS2015-en-test.zip:test_evaluation_task2a \
               16:9/98/STS2016-en-test.zip:sts2016-english-with-gs-v1.0; do
    IFS=: read -r year url subdir <<<"$entry"
    fetch "$STSWIKI/$url" "$work/sts$year.zip"
    unzip -q "$work/sts$year.zip" -d "$work"
    mv "$work/$subdir" "$dest/STS/STS$year-en-test"
  done
  # STS16 ships as STS2016.{input,gs}.*, with two extra source columns in the input files.
  local f
  for f in "$dest"/STS/STS16-en-test/STS2016.*.txt; do
    local base=${f##*/STS2016.}
    if [[ $base == input.* ]]; then
      cut -f1,2 "$f" >"$dest/STS/STS16-en-test/STS.$base"
      rm "$f"
    else
      mv "$f" "$dest/STS/STS16-en-test/STS.$base"
    fi
  done
  fetch "$STSB_URL" "$work/stsb.tar.gz"
  tar -xzf "$work/stsb.tar.gz" -C "$work"
  mv "$work/stsbenchmark" "$dest/STS/STSBenchmark"
  for split in train trial test_annotated; do
    fetch "$SICK_URL/sick_$split.zip" "$work/sick_$split.zip"
    unzip -q -o "$work/sick_$split.zip" "SICK_$split.txt" -d "$dest/SICK"
  done
}

main() {
  local source=simcse force=0 dest=""
  while (($#)); do
    case $1 in
      -h|--help) usage; exit 0 ;;
      --source) (($# >= 2)) || die "--source needs a value"; source=$2; shift 2 ;;
      --source=*) source=${1#--source=}; shift ;;
      --force) force=1; shift ;;
      -*) die "unknown option $1 (see --help)" ;;
      *) [[ -z "$dest" ]] || die "only one DIR allowed (see --help)"; dest=$1; shift ;;
    esac
  done
  [[ -n "$dest" ]] || { usage >&2; exit 2; }
  [[ $source == simcse || $source == original ]] || die "--source must be simcse or original, got $source"

  mkdir -p "$dest"
  if [[ -e "$dest/STS" || -e "$dest/SICK" ]]; then
    ((force)) || die "$dest/STS or $dest/SICK already exists (use --force to replace)"
    rm -rf "$dest/STS" "$dest/SICK"
  fi
  WORK=$(mktemp -d "$dest/.download.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT

  "from_$source" "$WORK" "$dest"

  local f
  for f in STS/STS12-en-test/STS.gs.MSRpar.txt STS/STS16-en-test/STS.input.postediting.txt \
           STS/STSBenchmark/sts-test.csv SICK/SICK_test_annotated.txt; do
    [[ -f "$dest/$f" ]] || die "download finished but $dest/$f is missing"
  done
  echo "SentEval STS data ready in $dest (use --sts-dir $dest)"
}

main "$@"
