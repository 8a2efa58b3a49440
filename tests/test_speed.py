"""The fast path computes what the plain path computes (checked on the CPU here), and which
speed-ups each command takes by default (Part 2 in fp32 on every device)."""
import json
import os
import re
from dataclasses import replace

import pytest
import torch
from conftest import last_line, make_folder, run_cli

import bench
import train_baseline
import train_gan
import train_simclr
import visualize
from flags import runtime_settings
from models import Discriminator, SimCLRNet
from train_gan import resolve
from utils.classifier import train_step
from utils.gan import GanSpec, build_gan, gan_iteration
from utils.settings import RuntimeSettings
from utils.runtime import (Runtime, cpu_has_bf16_units, peak_memory_mib,
                           reset_peak_memory, speedups)

GAN_ARGS = resolve(["--width", "8", "--lr", "1e-3"])  # the assignment's GAN, narrow


def test_cpu_auto_is_bf16_alone_and_only_where_the_cpu_has_bf16_units():
    flags = RuntimeSettings(device="cpu")
    assert speedups(flags, on_gpu=False, bf16_units=True) == dict(
        amp=True, compile=False, channels_last=False, fused_adam=False, data_on_device=False)
    assert not any(speedups(flags, on_gpu=False, bf16_units=False).values())
    assert all(speedups(flags, on_gpu=True, bf16_units=False).values())  # CUDA: every one
    off = replace(flags, amp="off", channels_last="on")
    assert speedups(off, on_gpu=False, bf16_units=True) == dict(
        amp=False, compile=False, channels_last=True, fused_adam=False, data_on_device=False)
    rt = Runtime.from_settings(flags)  # this machine: bf16 exactly where its CPU has the units
    assert rt.device == torch.device("cpu") and rt.amp == cpu_has_bf16_units()
    assert not any(rt.describe()[k] for k in ("compile", "channels_last", "fused_adam",
                                              "data_on_device"))
    rt = Runtime.from_settings(replace(flags, amp="on", channels_last="on"))
    assert rt.amp and rt.channels_last and not rt.compile
    with rt.autocast():
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_bf16_units_are_read_from_the_cpus_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    for text, expected in (("flags : fpu avx2 avx512f avx512_bf16 sse\n", True),
                           ("flags : fpu avx2 amx_bf16 amx_tile\n", True),
                           ("flags : fpu avx2 avx512f avx512bw\n", False)):
        cpuinfo.write_text(text)
        assert cpu_has_bf16_units(str(cpuinfo)) is expected, text
    assert cpu_has_bf16_units(str(tmp_path / "absent")) is False  # no cpuinfo: no claim


def test_trainers_take_a_compiled_module():
    """A compiled module has no truth value (it forwards len() to its module): the trainers
    must keep it as given, not test it (`--compile on` failed so for the classifiers)."""
    model, net = Discriminator(width=4), SimCLRNet(Discriminator(width=4), torch.nn.Identity())
    rt, opt = Runtime(torch.device("cpu")), torch.optim.SGD(model.parameters(), lr=0.1)
    fast = torch.compile(model)  # compiled lazily: nothing runs here
    assert train_baseline.BaselineTrainer(None, model, opt, rt, None, fast=fast).fast is fast
    fast = torch.compile(net)
    assert train_simclr.SimCLRTrainer(None, net, opt, rt, fast=fast).fast is fast


@pytest.mark.slow
def test_compiled_gan_iteration_matches_eager():
    """torch.compile cannot differentiate twice: the penalty goes through the plain module.
    A compiled iteration (inductor) gives the eager iteration's losses, penalty and gradients,
    the penalty's second-order term included. (Weights after Adam are not compared: with
    beta1 = 0 a first step moves each weight by lr * sign(grad), and rounding flips the sign
    of gradients that are nearly zero.)"""
    results = []
    for rt in (Runtime(torch.device("cpu")), Runtime(torch.device("cpu"), compile=True)):
        nets, opt_g, opt_d = build_gan(GAN_ARGS, 10, rt)
        gen = torch.Generator().manual_seed(1)
        real, labels = torch.rand(8, 3, 32, 32, generator=gen) * 2 - 1, torch.arange(8)
        out = gan_iteration(nets, opt_g, opt_d, real, labels, 0, GanSpec.of(GAN_ARGS), rt,
                            torch.Generator().manual_seed(2))
        grads = [torch.cat([p.grad.flatten() for p in m.parameters()]) for m in (nets.G, nets.D)]
        results.append((out, grads))
    ((lg1, ld1, s1), (gg1, gd1)), ((lg2, ld2, s2), (gg2, gd2)) = results
    assert torch.allclose(lg1, lg2, rtol=1e-4) and torch.allclose(ld1, ld2, rtol=1e-4)
    assert torch.allclose(s1, s2, rtol=1e-4, atol=1e-5)  # s[0] is the gradient penalty
    assert torch.allclose(gg1, gg2, rtol=1e-3, atol=1e-5 * gg1.abs().max())
    assert torch.allclose(gd1, gd2, rtol=1e-3, atol=1e-5 * gd1.abs().max())


def test_bf16_channels_last_fused_step_stays_close_to_fp32():
    torch.manual_seed(0)
    x, y = torch.rand(16, 3, 32, 32) * 2 - 1, torch.randint(0, 10, (16,))
    losses = []
    for rt in (Runtime(torch.device("cpu")),
               Runtime(torch.device("cpu"), amp=True, channels_last=True, fused_adam=True)):
        torch.manual_seed(1)
        model = rt.module(Discriminator(8))
        opt = rt.adam(model.parameters(), lr=1e-3)
        losses.append([train_step(model, opt, x.contiguous(memory_format=rt.memory_format), y,
                                  rt)[0].item() for _ in range(3)])
    assert losses[0] == pytest.approx(losses[1], rel=0.03)


@pytest.mark.slow
def test_fast_path_learns_like_the_plain_path(tmp_path, capsys):
    common = ["--dataset", "digits", "--width", "16", "--batch_size", "64", "--lr", "2e-3",
              "--epochs", "4", "--log_every", "1000"]
    fast = ["--amp", "on", "--channels_last", "on", "--fused_adam", "on",
            "--data_on_device", "on"]
    acc = []
    for i, extra in enumerate(([], fast)):
        code, out, err = run_cli(train_baseline.main,
                                 common + extra + ["--out_dir", str(tmp_path / str(i))], capsys)
        assert code == 0, err
        acc.append(json.loads(out.splitlines()[-1])["test_acc"])
        # every epoch notes its own peak memory, in the log and on the console
        log = [json.loads(line) for line in open(tmp_path / str(i) / "baseline_log.jsonl")]
        peaks = [r["peak_mib"] for r in log if r["event"] == "epoch"]
        assert len(peaks) == 4 and all(p > 50 for p in peaks), peaks
        assert re.search(r"epoch 4/4 .* peak \d+ MiB\)", err), err
    assert min(acc) > 60 and abs(acc[0] - acc[1]) < 10, acc


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux only")
def test_the_peak_memory_window_starts_again_at_each_reset():
    cpu = torch.device("cpu")
    reset_peak_memory(cpu)
    before = peak_memory_mib(cpu)
    big = torch.ones(64 * 2**20)  # 256 MiB, touched
    during = peak_memory_mib(cpu)
    del big
    assert during > before + 200, (before, during)
    reset_peak_memory(cpu)  # a new window forgets the freed 256 MiB
    assert peak_memory_mib(cpu) < during - 200


@pytest.mark.slow
def test_bench_runs_on_the_cpu_and_reports_every_figure(capsys):
    code, out, err = run_cli(bench.main, ["--device", "cpu", "--width", "8", "--batch_size", "16",
                                          "--steps", "2", "--warmup", "1",
                                          "--original_workers", "0"], capsys)
    assert code == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["device"].startswith("CPU")
    for job in ("baseline_step", "gan_iteration", "perturb", "max_class_step",
                "max_features_step"):
        f = res[job]
        for path in ("fast", "original"):
            assert f[path]["images_per_s"] > 0 and f[path]["ms_per_step"] > 0
            assert f[path]["peak_mib"] > 0
        assert f["speedup"] == round(f["fast"]["images_per_s"] / f["original"]["images_per_s"], 2)
        if job in ("baseline_step", "gan_iteration"):  # the figures agree: 16 images a step
            for path in ("fast", "original"):
                assert f[path]["images_per_s"] == pytest.approx(
                    16 * 1000 / f[path]["ms_per_step"], rel=0.02), (job, path)
    assert "| baseline_step |" in out  # the table for the README
    from recipes import RECIPES

    assert set(res["recipes"]) == set(RECIPES)  # every recipe's iteration, at the given sizes
    for recipe, f in res["recipes"].items():
        assert f["batch_size"] == 16, recipe
        assert f["images_per_s"] == pytest.approx(16 * 1000 / f["ms_per_step"], rel=0.02)
        assert f["arch"] == RECIPES[recipe].defaults["arch"]


def test_bench_refuses_a_data_dir_that_is_not_cifar10(tmp_path, capsys):
    """bench.py has no --dataset: its advice must not name one."""
    data = make_folder(tmp_path / "data")  # classes a and b
    code, _, err = run_cli(bench.main, ["--device", "cpu", "--data_dir", data, "--which",
                                        "baseline"], capsys)
    line = last_line(code, err)  # after the line that says the folder is being decoded
    assert "not CIFAR-10's" in line and "--dataset" not in line and "leave --data_dir out" in line


def test_bench_measures_each_speed_flag_against_none(capsys):
    """--which flags: every speed flag alone and all together (holding the data on the device
    only where that means something), each against none."""
    import torch

    names = lambda device: list(bench.flag_variants(torch.device(device)))  # noqa: E731
    assert names("cpu") == ["none", "amp", "compile", "channels_last", "fused_adam", "all"]
    assert names("cuda") == ["none", "amp", "compile", "channels_last", "fused_adam",
                             "data_on_device", "all"]
    assert bench.flag_variants(torch.device("cpu"))["all"] == dict(
        amp=True, compile=True, channels_last=True, fused_adam=True)
    args = bench.build_parser().parse_args(["--width", "8", "--batch_size", "16", "--steps", "2",
                                            "--warmup", "1"])
    args.width, args.batch_size = 8, 16
    data = bench.random_data(256, 0)
    table = bench.bench_flags(args, data, torch.device("cpu"),
                              {"none": {}, "channels_last": {"channels_last": True}})
    for job in ("baseline_step", "gan_iteration"):
        rows = table[job]
        assert list(rows) == ["none", "channels_last"] and rows["none"]["speedup"] == 1.0
        assert rows["channels_last"]["speedup"] == round(
            rows["channels_last"]["images_per_s"] / rows["none"]["images_per_s"], 2)
        assert all(r["first_s"] > 0 and r["ms_per_step"] > 0 for r in rows.values())
    bench.print_flags(table, "CPU", args)
    out = capsys.readouterr().out
    assert "| baseline_step | channels_last |" in out and "| gan_iteration | none |" in out


def test_deterministic_turns_on_deterministic_kernels_and_off_autotuning():
    try:
        rt = Runtime.from_settings(RuntimeSettings(device="cpu", deterministic=True))
        assert rt.deterministic and rt.describe()["deterministic"]
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
        import os

        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False


def test_sync_bn_is_for_several_cuda_processes(capsys):
    from train_gan import main
    from utils.distributed import Dist

    flags = RuntimeSettings(device="cpu", sync_bn="auto")
    assert not Runtime.from_settings(flags, Dist(0, 2)).sync_bn  # CPU: no kernels
    code, _, err = run_cli(main, ["--dataset", "digits", "--device", "cpu", "--sync_bn", "on"],
                           capsys)
    assert code == 2 and err.count("\n") == 1 and "--sync_bn off" in err


def test_part_2_runs_in_fp32_by_default_on_every_device():
    args = runtime_settings(visualize.build_parser().parse_args(["all"]))
    assert args.amp == "off"
    assert speedups(args, on_gpu=True)["amp"] is False  # even on CUDA
    assert speedups(args, on_gpu=True)["channels_last"] is True
    on = runtime_settings(visualize.build_parser().parse_args(["all", "--amp", "on"]))
    assert speedups(on, on_gpu=False, bf16_units=False)["amp"] is True  # still, when asked
    trainer = train_gan.resolve([]).runtime
    assert speedups(trainer, on_gpu=True)["amp"]
    assert not speedups(trainer, on_gpu=False, bf16_units=False)["amp"]
    assert speedups(trainer, on_gpu=False, bf16_units=True)["amp"]  # a CPU with bf16 units
