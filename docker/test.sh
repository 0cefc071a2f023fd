#!/usr/bin/env bash
# Build and run the containers here, as docs/deploy.md describes; heavy (about 20-30 minutes cold),
# so not part of `make test`:
#
#   bash docker/test.sh            # or: make docker-test
#
# 1. both images build (times and sizes recorded);
# 2. the CPU image runs the demo flow on its own: migrate, ingest a small synthetic set, serve,
#    a text and an image search, and its HEALTHCHECK turns healthy;
# 3. the GPU image imports torch and a FAISS with its GPU symbols on this CPU host;
# 4. the compose stack comes up (host-network override): two API replicas answer on one port, a
#    fine-tune job submitted over the admin API runs in the worker container, the worker container
#    is killed mid-job and started again, the job resumes from its checkpoint, and its model is
#    promoted.
# 5. the compose file as it is, on the bridge network: the load balancer spreads requests over the
#    API replicas, and finds a third one after `--scale api=3`.
# Results go to docker/test-results.json (and the console); docs/deploy.md quotes them.
set -euo pipefail
exec 3>&1  # the console, for messages from inside wait_for (whose output is discarded)
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/docker/test-results.json
LOG=${DOCKER_TEST_LOG:-/tmp/crossmodal-docker-test}
mkdir -p "$LOG"
# BuildKit: Debian's docker client has it built in; a client without buildx would fall back to the
# classic builder, which does not know RUN --mount.
DOCKER=${DOCKER:-$( [ -x /usr/bin/docker ] && echo /usr/bin/docker || command -v docker )}
export DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1 PATH=$(dirname "$DOCKER"):$PATH
COMPOSE=${COMPOSE:-docker-compose}
if ! command -v "$COMPOSE" >/dev/null; then  # Debian's docker.io does not bring it
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing docker-compose (Debian's package)"
        apt-get install -y -qq docker-compose >/dev/null || { apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null; }
    else
        echo "docker/test.sh needs $COMPOSE (Debian: apt-get install docker-compose)" >&2
        exit 1
    fi
fi
PROJECT=crossmodaltest
PORT=8000
results=()
note() { echo "== $*"; }
record() { results+=("\"$1\": $2"); }
py() { python3 -c "$@"; }
wait_for() {  # wait_for SECONDS 'bash condition': evaluate it every 2 s (in this shell) until it holds
    local deadline=$((SECONDS + $1))
    until eval "$2" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || { echo "timed out after $1 s: $2"; return 1; }
        sleep 2
    done
}
http_json() { py "import json,sys,urllib.request as u; r=u.urlopen(u.Request(sys.argv[1], data=(sys.argv[2].encode() if len(sys.argv)>2 and sys.argv[2] else None), headers={'content-type':'application/json', **({'authorization':'Bearer '+sys.argv[3]} if len(sys.argv)>3 else {})}), timeout=60); print(r.read().decode())" "$@"; }

cleanup() {
    $COMPOSE -p $PROJECT -f docker-compose.yml -f docker/compose.host.yml down -v --remove-orphans >/dev/null 2>&1 || true
    $COMPOSE -p ${PROJECT}bridge down -v --remove-orphans >/dev/null 2>&1 || true
    $DOCKER rm -f crossmodal-demo >/dev/null 2>&1 || true
    $DOCKER volume rm -f crossmodal-demo-data >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup

# ------------------------------------------------------------------ 1. builds
build() {  # build NAME DOCKERFILE
    local t0=$SECONDS
    note "building $1 from $2"
    $DOCKER build --network host -f "$2" -t "$1" . >"$LOG/build-${1//[:\/]/-}.log" 2>&1 \
        || { tail -30 "$LOG/build-${1//[:\/]/-}.log"; return 1; }
    local size
    size=$($DOCKER image inspect "$1" --format '{{.Size}}')
    echo "   $1: $((SECONDS - t0)) s, $((size / 1000000)) MB"
    record "build_seconds_${1//[:\/-]/_}" $((SECONDS - t0))
    record "size_mb_${1//[:\/-]/_}" $((size / 1000000))
}
build crossmodal:cpu docker/Dockerfile
build crossmodal:gpu docker/Dockerfile.gpu
build crossmodal-postgres:15 docker/Dockerfile.postgres
build crossmodal-lb:2.6 docker/Dockerfile.lb

# ------------------------------------------------------------------ 2. the CPU image alone: the demo flow
note "CPU image: migrate, ingest a synthetic set, serve, search"
run_cli() { $DOCKER run --rm --network host --shm-size=1g -v crossmodal-demo-data:/data crossmodal:cpu "$@"; }
run_cli crossmodal db upgrade
run_cli crossmodal synth /data/demo --n 200 --image-size 64 >/dev/null
run_cli crossmodal bootstrap /data/demo/manifest.csv --epochs 20 >"$LOG/bootstrap.log"
run_cli crossmodal ingest /data/demo/manifest.csv | tee "$LOG/ingest.log" | grep -E "items added|index published"
$DOCKER run -d --name crossmodal-demo --network host --shm-size=1g -e CROSSMODAL_PORT=$PORT \
    -v crossmodal-demo-data:/data crossmodal:cpu >/dev/null
t0=$SECONDS
wait_for 300 '[ "$($DOCKER inspect -f "{{.State.Health.Status}}" crossmodal-demo)" = healthy ]'
record demo_healthy_after_s $((SECONDS - t0))
text=$(http_json "http://127.0.0.1:$PORT/v1/search/text" '{"query": "a large red circle in the top left", "k": 3}')
echo "   text search: $(echo "$text" | py "import json,sys; b=json.load(sys.stdin); print(b['count'], 'hits, model', b['model']['id'], [h['text'] for h in b['data']])")"
image=$($DOCKER exec crossmodal-demo python -c "
import base64, json, urllib.request as u
data = base64.b64encode(open('/data/demo/images/000000.png', 'rb').read()).decode()
r = u.urlopen(u.Request('http://127.0.0.1:$PORT/v1/search/image', data=json.dumps({'image_base64': data, 'target': 'text', 'k': 3}).encode(), headers={'content-type': 'application/json'}))
print(json.load(r)['count'])")
echo "   image search: $image hits"
[ "$image" -gt 0 ]
$DOCKER exec crossmodal-demo id -u | grep -qx 10001  # not root
record demo_text_search_ok true
record demo_image_search_hits "$image"
$DOCKER rm -f crossmodal-demo >/dev/null

# ------------------------------------------------------------------ 3. the GPU image on a CPU host
note "GPU image: imports on this CPU host"
gpu=$($DOCKER run --rm crossmodal:gpu python -c "
import faiss, torch
assert hasattr(faiss, 'StandardGpuResources') and hasattr(faiss, 'GpuMultipleClonerOptions'), 'FAISS without GPU symbols'
print(f'torch {torch.__version__} cuda_available={torch.cuda.is_available()} faiss {faiss.__version__} gpus={faiss.get_num_gpus()}')")
echo "   $gpu"
record gpu_image_imports "\"$gpu\""
if command -v nvidia-smi >/dev/null && nvidia-smi >/dev/null 2>&1; then
    note "a GPU is here: the GPU image serves on it"
    $DOCKER run --rm --gpus all crossmodal:gpu python -c "import torch, faiss; assert torch.cuda.is_available() and faiss.get_num_gpus() > 0; print('GPU ok')"
    record gpu_image_on_gpu true
else
    record gpu_image_on_gpu '"no GPU on this machine"'
fi

# ------------------------------------------------------------------ 4. the compose stack
note "compose: postgres, migrate, seed, two API replicas, a worker"
dc() { $COMPOSE -p $PROJECT -f docker-compose.yml -f docker/compose.host.yml "$@"; }
export CROSSMODAL_DEMO_ITEMS=300
t0=$SECONDS
dc up -d --scale api=2 postgres migrate seed api worker >"$LOG/compose-up.log" 2>&1 || { cat "$LOG/compose-up.log"; exit 1; }
wait_for 900 '[ "$($DOCKER inspect -f "{{.State.Status}} {{.State.ExitCode}}" ${PROJECT}_seed_1)" = "exited 0" ]'
wait_for 300 'http_json http://127.0.0.1:$PORT/readyz'
record compose_ready_after_s $((SECONDS - t0))
instances=$(for _ in $(seq 1 40); do http_json "http://127.0.0.1:$PORT/readyz" | py "import json,sys; print(json.load(sys.stdin)['instance'])"; done | sort -u | wc -l)
echo "   distinct API replicas answering on :$PORT: $instances"
[ "$instances" -eq 2 ]
record compose_api_replicas_answering "$instances"
KEY=$(dc exec -T worker crossmodal keys create --name docker-test --role admin | tail -1 | tr -d '\r')
API=http://127.0.0.1:$PORT/v1/admin
config='{"kind": "finetune", "config": {"optim": {"steps": 60, "batch_size": 32, "warmup_steps": 5}, "checkpoint_every": 10, "eval_every": 30, "data": {"num_workers": 0}}}'
job=$(http_json "$API/jobs" "$config" "$KEY" | py "import json,sys; print(json.load(sys.stdin)['id'])")
echo "   fine-tune job #$job queued"
job_field() { http_json "$API/jobs/$job" "" "$KEY" | py "import json,sys; j=json.load(sys.stdin); print(eval(sys.argv[1], {}, {'j': j}))" "$1"; }
wait_for 900 '[ "$(job_field "(j[\"details\"] or {}).get(\"done\", 0) >= 25")" = True ]'
note "killing the worker container mid-job (at step $(job_field '(j["details"] or {}).get("done")'))"
dc kill -s SIGKILL worker >/dev/null
sleep 5
dc start worker >/dev/null  # the job is requeued once its heartbeat is stale (30 s), then resumes
job_done() {  # job_done: true once the job succeeded; stops the script if it failed
    local status
    status=$(job_field 'j["status"]')
    case $status in
        succeeded) return 0 ;;
        failed|cancelled) echo "job #$job $status: $(job_field 'j["error"]')" >&3; exit 1 ;;
        *) return 1 ;;
    esac
}
wait_for 1800 job_done
resumed=$(job_field 'j["result"]["resumed_from_step"]')
attempts=$(job_field 'j["attempts"]')
model=$(job_field 'j["result"]["model_id"]')
echo "   job #$job succeeded on attempt $attempts, resumed from step $resumed; candidate model #$model"
[ "$attempts" -ge 2 ] && [ "$resumed" -gt 0 ]
record compose_finetune_resumed_from_step "$resumed"
record compose_finetune_attempts "$attempts"
promote=$(http_json "$API/models/$model/promote" '{"force": true}' "$KEY" | py "import json,sys; print(json.load(sys.stdin)['id'])")
job=$promote
wait_for 1800 job_done
served_model() { http_json "http://127.0.0.1:$PORT/v1/search/text" '{"query": "a blue square"}' | py "import json,sys; print(json.load(sys.stdin)['model']['id'])"; }
wait_for 120 '[ "$(served_model)" = "$model" ] && [ "$(served_model)" = "$model" ]'
echo "   model #$model promoted; both replicas serve it"
record compose_promoted_model "$model"
record compose_total_s $((SECONDS - t0))
dc down -v >/dev/null 2>&1

# ------------------------------------------------------------------ 5. the default (bridge) network
note "compose as it is, on Docker's bridge network: replicas behind the load balancer, scaled live"
db() { $COMPOSE -p ${PROJECT}bridge "$@"; }
LB=18090
export CROSSMODAL_PORT=$LB CROSSMODAL_DEMO_ITEMS=100
db up -d --scale api=2 >"$LOG/compose-bridge.log" 2>&1 || { cat "$LOG/compose-bridge.log"; exit 1; }
replicas() { for _ in $(seq 1 20); do http_json "http://127.0.0.1:$LB/readyz" | py "import json,sys; print(json.load(sys.stdin)['instance'])"; done | sort -u | wc -l; }
wait_for 600 '[ "$(replicas)" -eq 2 ]'
db up -d --scale api=3 api >>"$LOG/compose-bridge.log" 2>&1
wait_for 300 '[ "$(replicas)" -eq 3 ]'
echo "   the load balancer spreads requests over 2 replicas, then over 3 after --scale api=3"
record bridge_lb_replicas_after_scale 3
db down -v >/dev/null 2>&1

(IFS=,; echo "{${results[*]}}") | py "import json,sys; print(json.dumps(json.load(sys.stdin), indent=2))" >"$OUT"
note "all checks passed; results in $OUT"
cat "$OUT"
