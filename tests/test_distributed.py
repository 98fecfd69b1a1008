"""Distributed data-parallel training with 2 gloo processes on the CPU (torchrun): against one process with the same global batch, with
shards smaller than a batch, the sharding rule for many sizes, and workers that die with their launcher. Every run has a time limit."""
import copy, json, os, queue, signal, subprocess, sys, threading, time
from itertools import product
from pathlib import Path
import pytest
import torch
from fastai.data.load import DataLoader
from visionnb.callbacks.distributed import ShardedDL

JOB = Path(__file__).with_name('ddp_job.py')
ENV = dict(os.environ, OMP_NUM_THREADS='1', MPLBACKEND='Agg')
COCO_KEYS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')

def run_job(out, *args, nproc=1):
    launcher = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc-per-node={nproc}'] if nproc > 1 else [sys.executable]
    done = subprocess.run(launcher + [str(JOB), args[0], str(out), *args[1:]], capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((Path(out)/'metrics.json').read_text())

def visionnb(*args, timeout=600) -> dict:
    "The JSON result of the `visionnb` command `args` (with --json), which must succeed within `timeout` seconds."
    done = subprocess.run(['visionnb', *args, '--json'], capture_output=True, text=True, env=ENV, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp('ddp')
    one = run_job(root/'one', 'train', '--bs', '16')
    two = run_job(root/'two', 'train', '--bs', '8', nproc=2)
    return root, one, two

def test_two_processes_train_like_one_with_the_same_global_batch(trained):
    root, one, two = trained
    assert one['global_batch'] == two['global_batch'] == 16
    # same images per step, same loss normalisers (batch_normalizer), frozen BatchNorm statistics: only the order of float sums differs
    assert two['valid_loss'] == pytest.approx(one['valid_loss'], rel=5e-3)
    assert two['AP50'] == pytest.approx(one['AP50'], abs=2e-3)
    a, b = (torch.load(root/name/'weights.pth', weights_only=True) for name in ('one', 'two'))
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < 1e-2

@pytest.mark.parametrize('val_bs', ['2', '16'])
def test_distributed_evaluation_equals_single_process_evaluation(trained, val_bs):
    # batch 2: 4 batches, 2 per process; batch 16: one batch of all 8 images, so rank 1 validates nothing and must not hang
    root, one, _ = trained
    weights = str(root/'one'/'weights.pth')
    single = run_job(root/f'eval1_{val_bs}', 'eval', '--val-bs', val_bs, '--weights', weights)
    double = run_job(root/f'eval2_{val_bs}', 'eval', '--val-bs', val_bs, '--weights', weights, nproc=2)
    assert single['AP50'] > 0   # a trained model: the comparison is not of two empty results
    for key in COCO_KEYS: assert double[key] == single[key], key
    assert double['valid_loss'] == pytest.approx(single['valid_loss'], rel=1e-6)   # a sum over processes: float order differs
    for key in single:
        if key.startswith('valid_'): assert double[key] == pytest.approx(single[key], rel=1e-6), key   # loss terms: every image once

def test_validation_during_training_is_of_the_model_rank_0_saves(tmp_path):
    # BatchNorm statistics that train move with each process's own batches: validation (2 batches per process) must use rank 0's
    fit = run_job(tmp_path/'fit', 'train', '--bs', '8', '--epochs', '2', '--train-bn', nproc=2)
    single = run_job(tmp_path/'eval', 'eval', '--train-bn', '--weights', str(tmp_path/'fit'/'weights.pth'))
    assert fit['valid_loss'] == pytest.approx(single['valid_loss'], rel=1e-6)
    for key in COCO_KEYS: assert fit[key] == single[key], key

def test_cli_trains_on_two_processes(tmp_path):
    out = tmp_path/'run'
    result = visionnb('train', '--nproc', '2', '--shapes-size', 'tiny', '--epochs', '2', '--size', '128', '--bs', '4', '--channels', '32',
                      '--convs', '1', '--arch', 'fcos', '--precision', 'fp32', '--out', str(out))
    assert result['settings']['processes'] == 2
    assert (out/'model.pth').exists() and (out/'checkpoints'/'last.pth').exists()
    assert len(result['history']) == 2

def test_cli_trains_on_two_processes_at_the_default_batch_size(tmp_path):
    # tiny data: 24 training images are 12 per process, fewer than a batch of 16, and the 8 validation images are one batch, on rank 0
    out = tmp_path/'run'
    fit = visionnb('train', '--nproc', '2', '--shapes-size', 'tiny', '--epochs', '1', '--size', '96', '--channels', '32', '--convs', '1',
                   '--out', str(out), timeout=300)
    assert fit['settings']['bs'] == 16 and fit['settings']['processes'] == 2
    assert fit['losses']['train']['loss'] is not None   # every process took a step
    evaluated = visionnb('eval', str(out/'model.pth'), timeout=300)
    assert evaluated['images'] == fit['data']['images']['valid'] == 8
    assert fit['metrics'] == evaluated['metrics']
    assert {k: fit['history'][-1][k] for k in COCO_KEYS} == {k: round(evaluated['metrics'][k], 6) for k in COCO_KEYS}

def _children(pid:int) -> list[int]:
    "The processes whose parent is `pid`, from /proc."
    found = []
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try: fields = stat.read_text().rsplit(')', 1)[1].split()
        except OSError: continue   # ended while we looked
        if int(fields[1]) == pid: found.append(int(stat.parent.name))
    return found

def _alive(pid:int) -> bool:
    "Whether process `pid` runs (a zombie, dead but not yet reaped, does not)."
    try: return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError: return False

@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='parent-death signals are Linux-only')
def test_workers_die_with_their_launcher(tmp_path):
    launcher = subprocess.Popen(['visionnb', 'train', '--nproc', '2', '--shapes-size', 'tiny', '--epochs', '200', '--size', '64', '--channels', '16',
                                 '--convs', '1', '--out', str(tmp_path/'run')], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    lines, workers = queue.Queue(), []
    threading.Thread(target=lambda: [lines.put(line) for line in launcher.stdout], daemon=True).start()
    try:
        deadline, said = time.monotonic() + 300, []
        # rank 0 says 'training ...' once both processes have joined the process group, where they ask for the parent-death signal
        while not any(line.startswith('training ') for line in said):
            assert launcher.poll() is None and time.monotonic() < deadline, ''.join(said)[-3000:]
            try: said.append(lines.get(timeout=1))
            except queue.Empty: pass
        workers = _children(launcher.pid)
        assert len(workers) == 2, workers
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(map(_alive, workers)) and time.monotonic() < deadline: time.sleep(0.2)
        assert not any(map(_alive, workers)), [w for w in workers if _alive(w)]
    finally:
        for pid in [launcher.pid] * (launcher.poll() is None) + [w for w in workers if _alive(w)]: os.kill(pid, signal.SIGKILL)

def _epoch(dl, world_size:int) -> list[list[list[int]]]:
    "The batches each of `world_size` processes takes from `dl` in one epoch; each shards the same order (a copy of `dl`'s generator)."
    ranks = [ShardedDL(copy.deepcopy(dl), rank=r, world_size=world_size) for r in range(world_size)]
    shards = [[b.tolist() for b in rank] for rank in ranks]
    assert [len(rank) for rank in ranks] == [len(s) for s in shards]   # `len` tells the truth
    return shards

def _order(dl) -> list[int]:
    "The order of the next epoch of `dl` (each epoch draws a new generator first), from a copy."
    dl = copy.deepcopy(dl)
    dl.randomize()
    return list(dl.get_idxs())

SIZES = list(product([1, 2, 3, 5, 7, 8, 12, 24, 25, 33, 64], [1, 2, 3, 4], [1, 2, 3, 4, 16]))   # (images, processes, batch size)

@pytest.mark.parametrize('drop_last', [True, False])
def test_every_process_takes_the_same_training_steps(drop_last):
    for n, world_size, bs in SIZES:
        dl = DataLoader(list(range(n)), bs=bs, shuffle=True, drop_last=drop_last)
        order, shards, case = _order(dl), _epoch(dl, world_size), f'{n=} {world_size=} {bs=}'
        steps = {len(s) for s in shards}
        assert len(steps) == 1 and min(steps) >= 1, case   # DDP steps wait for every process: as many on each, and at least one
        if drop_last: assert all(len(b) == bs for s in shards for b in s), case
        else: assert set(sum(sum(shards, []), [])) == set(order), case
        global_bs = world_size * bs
        for k in range(n // global_bs):   # the steps one process with the global batch takes: the same images
            assert sorted(sum((s[k] for s in shards), [])) == sorted(order[k * global_bs:(k + 1) * global_bs]), case
        taken = sum(len(b) for s in shards for b in s)
        assert taken <= max(n + world_size - 1, global_bs), case   # padding: less than one image per process, or up to one batch each

def test_validation_takes_every_image_once_in_the_batches_of_one_process():
    for n, world_size, bs in SIZES:
        dl, case = DataLoader(list(range(n)), bs=bs), f'{n=} {world_size=} {bs=}'
        shards, single = _epoch(dl, world_size), [b.tolist() for b in dl]
        assert sorted(i for s in shards for b in s for i in b) == list(range(n)), case   # no padding: no image counted twice
        assert sorted(b for s in shards for b in s) == single, case   # each image in the company and padding it has in one process
        counts = [len(s) for s in shards]
        assert max(counts) - min(counts) <= 1 and counts == sorted(counts, reverse=True), case
