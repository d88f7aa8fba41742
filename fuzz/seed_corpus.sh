#!/usr/bin/env bash
# Seeds each fuzz target's corpus with valid inputs cut from the checked-in
# version-2 fixture, so that mutations start past the magic and checksums.
set -euo pipefail
cd "$(dirname "$0")"
F=../tests/fixtures/v2-l2-300x16
mkdir -p corpus/{graph_header,node_record,codebook,codes,manifest,hot}
head -c 4096 $F/gen-0/graph > corpus/graph_header/fixture
cp $F/gen-0/pq corpus/codebook/fixture
cp $F/gen-0/codes corpus/codes/fixture
cp $F/manifest corpus/manifest/fixture
cp $F/gen-0/hot corpus/hot/fixture
# node_record: a 4-byte id, then bytes of records.
{ printf '\x05\x00\x00\x00'; tail -c +4097 $F/gen-0/graph | head -c 8192; } > corpus/node_record/fixture
echo "seeded fuzz/corpus from $F"
