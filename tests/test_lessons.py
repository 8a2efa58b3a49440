"""Each lesson computes what its own code computes: its optimizer (the Adam step guard is IE
534's alone), which network steps first, its initialisation, its layers' biases, its last
partial batch, Part 2 in fp32, and seed 003's batch-normalization lesson."""
import json

import pytest
import torch
import torch.nn as nn
from conftest import run_cli
from PIL import Image

import train_baseline
import train_gan
import train_simclr
import visualize
from models import ARCHITECTURES, discriminator, generator
from flags import runtime_settings
from recipes import CLASSIFIER_RECIPES, RECIPES, recipe_values
from utils.data import Batches
from utils.gan import GanSpec, build_gan, gan_iteration
from utils.runtime import Runtime, speedups
from utils.settings import Settings

# recipe: (the Adam step guard, the discriminator steps first)
LESSONS = {"ie534": (1024, "off"), "cs231n-gan": (0, "on"), "cs231n-lsgan": (0, "on"),
           "cs231n-dcgan": (0, "on"), "udacity-dcgan-svhn": (0, "on"), "wgan-clip": (0, "on"),
           "cnn-gan-modern": (0, "on")}  # the project's own: plain Adam, the critic first


def test_each_recipe_resolves_its_lessons_optimizer_and_order():
    assert set(LESSONS) == set(RECIPES)
    for recipe, (cap, d_first) in LESSONS.items():
        a = train_gan.resolve(["--recipe", recipe])
        assert (a.optim.adam_step_cap, a.gan.d_first) == (cap, d_first), recipe
        spec = GanSpec.of(a)
        assert (spec.step_cap, spec.d_first) == (cap, d_first == "on"), recipe
        assert (recipe_values(recipe)["adam_step_cap"], recipe_values(recipe)["d_first"]) == (
            cap, d_first)
    assert train_gan.parse_args(["--recipe", "cs231n-gan", "--adam_step_cap", "1024",
                                 "--d_first", "off"]).adam_step_cap == 1024  # flags still win
    assert train_baseline.parse_args([]).adam_step_cap == 1024  # the assignment's classifier
    assert train_simclr.parse_args([]).adam_step_cap == 0  # SimCLR: plain Adam
    assert train_baseline.parse_args(["--recipe", "udacity-batchnorm"]).optimizer == "sgd"


def _tiny_gan(recipe, **overrides):
    """A recipe's networks at width 4 on 8x8 grey images, its optimizers and step spec."""
    a = Settings.resolve(recipe_values(recipe, width=4, **overrides))
    nets, opt_g, opt_d = build_gan(a, 0, Runtime(torch.device("cpu")), channels=1, image_size=8)
    return nets, opt_g, opt_d, GanSpec.of(a)


def _train(recipe, steps, **overrides):
    nets, opt_g, opt_d, spec = _tiny_gan(recipe, **overrides)
    real = torch.rand(4, 1, 8, 8) * 2 - 1
    gen = torch.Generator().manual_seed(0)
    for i in range(steps):
        gan_iteration(nets, opt_g, opt_d, real, None, i, spec, Runtime(torch.device("cpu")), gen)
    return nets, opt_g, opt_d


@pytest.mark.slow
@pytest.mark.parametrize("recipe,steps", [("ie534", 1030), ("cs231n-gan", 1030)])
def test_the_adam_guard_acts_on_both_optimizers_only_in_the_assignments_recipe(recipe, steps):
    """In a real run of gan_iteration past step 1,024: the assignment's guard sets both
    networks' Adam step back to 1,000 at 1,024, so 1,030 updates leave 1,006; CS231n's plain
    Adam counts all 1,030."""
    nets, opt_g, opt_d = _train(recipe, steps, arch="mlp")  # the recipe's optimizers, fast nets
    expected = 1006 if recipe == "ie534" else 1030
    for opt in (opt_g, opt_d):
        assert {int(s["step"]) for s in opt.state.values()} == {expected}, recipe


@pytest.mark.parametrize("d_first, gen_train, expected", [
    ("off", 1, "GD GD GD GD"),  # IE 534: the generator, then the critic
    ("off", 2, "GD D GD D"),
    ("on", 1, "DG DG DG DG"),  # CS231n and Udacity: the discriminator first
    ("on", 2, "D DG D DG"),  # WGAN: n_critic critic steps, then the generator
])
def test_which_network_steps_first(d_first, gen_train, expected):
    nets, opt_g, opt_d, spec = _tiny_gan("cs231n-gan", d_first=d_first, gen_train=gen_train)
    order = []
    opt_g.register_step_post_hook(lambda *a: order.append("G"))
    opt_d.register_step_post_hook(lambda *a: order.append("D"))
    real, gen = torch.rand(4, 1, 8, 8) * 2 - 1, torch.Generator().manual_seed(0)
    for i in range(4):
        gan_iteration(nets, opt_g, opt_d, real, None, i, spec, Runtime(torch.device("cpu")), gen)
        order.append(" ")
    assert "".join(order).split() == expected.split()


def test_the_generator_step_sees_the_critic_of_its_own_iteration():
    """With the discriminator first, the generator's loss is computed through the critic this
    iteration updated: the critic's weights after the iteration give the same loss."""
    nets, opt_g, opt_d, spec = _tiny_gan("cs231n-gan")
    seen = []
    nets.D.register_forward_hook(lambda m, inp, out: seen.append(
        [p.detach().clone() for p in m.parameters()]) if not torch.is_grad_enabled() or
        not next(m.parameters()).requires_grad else None)
    real = torch.rand(4, 1, 8, 8) * 2 - 1
    gan_iteration(nets, opt_g, opt_d, real, None, 0, spec, Runtime(torch.device("cpu")),
                  torch.Generator().manual_seed(0))
    assert seen and all(torch.equal(a, b) for a, b in zip(seen[-1], nets.D.parameters()))


def _bound_ratio(weight, bound):
    return weight.abs().max().item() / bound


def test_cs231n_initialisation_is_xavier_for_linear_and_transposed_convolutions():
    torch.manual_seed(0)
    D = discriminator("infogan", 32, 0, 1, 28)
    G = generator("infogan", 96, 32, 1, 28)
    conv = D.blocks[0][0]  # PyTorch's default: uniform with bound 1 / sqrt(fan_in), not Xavier
    fan_in, fan_out = 1 * 25, 32 * 25
    assert 0.9 < _bound_ratio(conv.weight, 1 / fan_in ** 0.5) <= 1
    assert _bound_ratio(conv.weight, (6 / (fan_in + fan_out)) ** 0.5) > 1.5
    for m in [m for m in list(D.modules()) + list(G.modules())
              if isinstance(m, (nn.Linear, nn.ConvTranspose2d))]:
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
        assert 0.9 < _bound_ratio(m.weight, (6 / (fan_in + fan_out)) ** 0.5) <= 1, m



@pytest.mark.parametrize("family", ["mlp", "ie534", "dcgan"])
def test_the_other_families_start_at_pytorchs_defaults(family):
    """CS231n's notebook applies initialize_weights to its DCGAN alone: the vanilla GAN and
    LSGAN (mlp) keep PyTorch's default, uniform with bound 1 / sqrt(fan_in) (well inside
    Xavier's sqrt(6 / (fan_in + fan_out)) for these layers); so do IE 534's and Udacity's,
    whose code sets nothing."""
    torch.manual_seed(0)
    channels, size = (1, 28) if family == "mlp" else (3, 32)
    width = {"mlp": 256, "ie534": 32, "dcgan": 32}[family]
    nets = (discriminator(family, width, 0, channels, size),
            generator(family, 96, width * (4 if family == "mlp" else 1), channels, size))
    checked = 0
    for m in [m for net in nets for m in net.modules()
              if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]:
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(m.weight)
        assert 0.9 < _bound_ratio(m.weight, 1 / fan_in ** 0.5) <= 1.0001, (family, m)
        checked += 1
    assert checked >= 5


def test_udacitys_dcgan_convolutions_have_no_bias_and_its_recipe_keeps_the_last_batch():
    D, G = discriminator("dcgan", 32, 0, 3, 32), generator("dcgan", 100, 32, 3, 32)
    convs = [m for m in list(D.modules()) + list(G.modules())
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert len(convs) == 6 and all(m.bias is None for m in convs)
    assert D.fc1.bias is not None and G.fc.bias is not None  # the linear layers keep theirs
    a = train_gan.parse_args(["--recipe", "udacity-dcgan-svhn"])
    assert (a.epochs, a.drop_last, a.batch_size, a.lr, a.noise) == (50, "off", 128, 2e-4,
                                                                     "uniform")
    images = torch.zeros(73257, 3, 2, 2, dtype=torch.uint8)  # SVHN's training set size
    b = Batches(images, torch.zeros(73257, dtype=torch.long), 128, drop_last=False, min_last=2)
    assert len(b) == 573 and b.epoch_images == 73257
    sizes = [len(y) for _, y in b.epoch(0, start=571)]
    assert sizes == [128, 41]
    one_left = Batches(images[:129], torch.zeros(129, dtype=torch.long), 128, drop_last=False,
                       min_last=2)
    assert len(one_left) == 1  # a last batch of one image cannot train a BatchNorm


@pytest.mark.slow
def test_a_gan_trains_the_last_partial_batch_when_asked(tmp_path, capsys):
    argv = ["--dataset", "digits", "--width", "8", "--batch_size", "64", "--subset", "200",
            "--epochs", "1", "--log_every", "1000", "--out_dir", str(tmp_path)]
    code, _, err = run_cli(train_gan.main, argv + ["--drop_last", "off"], capsys)
    assert code == 0, err
    assert "4 steps per epoch" in err  # 64 + 64 + 64 + 8
    code, _, err = run_cli(train_gan.main, argv + ["--overwrite"], capsys)
    assert code == 0 and "3 steps per epoch" in err


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


# ----------------------------------------------------------------------------- batch norm

def test_the_lessons_mlp_is_layer_batch_norm_activation_without_bias_before_batch_norm():
    with_bn = discriminator("udacity-mlp", 256, 10, 1, 28, batch_norm=True)
    plain = discriminator("udacity-mlp", 256, 10, 1, 28, batch_norm=False)
    kinds = [[type(m).__name__ for m in block] for block in with_bn.blocks]
    assert kinds == [["Flatten", "Linear", "BatchNorm1d", "ReLU"], ["Linear", "BatchNorm1d",
                                                                      "ReLU"]]
    sizes = [(m.in_features, m.out_features) for m in with_bn.modules()
             if isinstance(m, nn.Linear)]
    assert sizes == [(784, 512), (512, 256), (256, 1), (256, 10)]
    assert all(block[-3].bias is None for block in with_bn.blocks)
    assert [type(m).__name__ for m in plain.blocks[1]] == ["Linear", "ReLU"]
    assert all(block[-2].bias is not None for block in plain.blocks)
    assert ARCHITECTURES["udacity-mlp"].generator is None  # a classifier, no generator
    # eval mode uses the population statistics: a single image is classified as in a batch
    x = torch.randn(32, 1, 28, 28)
    with_bn.train()
    with_bn(x)
    with_bn.eval()
    with torch.no_grad():
        assert torch.allclose(with_bn(x[:1])[1], with_bn(x)[1][:1], atol=1e-6)


def test_batch_norm_is_refused_for_a_network_designed_without_it(capsys):
    code, _, err = run_cli(train_baseline.main, ["--dataset", "digits", "--batch_norm", "on"],
                           capsys)
    assert code == 2 and "udacity-mlp" in err and err.count("\n") == 1
    code, _, err = run_cli(train_gan.main, ["--dataset", "digits", "--arch", "udacity-mlp"],
                           capsys)
    assert code == 2 and "no generator" in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def batch_norm_runs(mnist_dir, tmp_path_factory):
    """The lesson's two runs, on 10,000 MNIST images for one epoch (the lesson: 60,000 for
    10 epochs)."""
    runs = {}
    for bn in ("on", "off"):
        out = tmp_path_factory.mktemp(f"bn_{bn}")
        runs[bn] = (out, train_baseline.main([
            "--recipe", "udacity-batchnorm", "--batch_norm", bn, "--data_dir", mnist_dir,
            "--subset", "10000", "--epochs", "1", "--out_dir", str(out), "--log_every",
            "100000"]))
    return runs


@pytest.mark.slow
def test_the_batch_norm_lesson_on_mnist(batch_norm_runs, tmp_path, capsys):
    """What the lesson shows: with BatchNorm, a lower training loss and a higher test
    accuracy (measured: 0.92 against 2.07, and 89.6% against 67.3% after one epoch)."""
    (on_dir, on), (off_dir, off) = batch_norm_runs["on"], batch_norm_runs["off"]
    settings = json.load(open(on_dir / "baseline_config.json"))
    assert (settings["optimizer"], settings["lr"], settings["batch_size"], settings["shuffle"],
            settings["schedule"], settings["augment"]) == ("sgd", 0.01, 64, "off", "none",
                                                           "none")
    assert on["test_acc"] > off["test_acc"] + 10, (on, off)
    log = lambda d: [json.loads(line) for line in open(d / "baseline_log.jsonl")]  # noqa: E731
    loss = {bn: [r for r in log(d) if r.get("event") == "epoch"][-1]["train_loss"]
            for bn, (d, _) in batch_norm_runs.items()}
    assert loss["on"] < 0.7 * loss["off"], loss
    code, stdout, err = run_cli(visualize.main, ["compare", "--runs", str(on_dir), str(off_dir),
                                                 "--out_dir", str(tmp_path)], capsys)
    assert code == 0, err
    final = json.loads(stdout.splitlines()[-1])["compare"]["final"]
    assert final["batch_norm on"]["test_acc"] == on["test_acc"]
    assert final["batch_norm off"]["train_loss"] == loss["off"]
    assert Image.open(tmp_path / "compare.png").size == (1000, 380)
    code, _, err = run_cli(visualize.main, ["compare", "--runs", str(tmp_path)], capsys)
    assert code == 2 and "baseline_log.jsonl" in err and err.count("\n") == 1
    assert set(CLASSIFIER_RECIPES) == {"ie534", "udacity-batchnorm"}


@pytest.mark.slow
def test_the_lessons_run_tests_in_eval_mode_and_in_training_mode(batch_norm_runs):
    """The recipe's --eval_bn both: the test accuracy with BatchNorm's running statistics and
    in training mode (measured 97.81% and 97.50% after the lesson's 10 epochs); without
    BatchNorm the two are one figure. Each class's accuracy comes with them."""
    for bn, (out, final) in batch_norm_runs.items():
        epochs = [json.loads(line) for line in open(out / "baseline_log.jsonl")]
        epochs = [r for r in epochs if r.get("event") == "epoch"]
        assert all("test_acc_train_mode" in r for r in epochs)
        assert final["test_acc_train_mode"] == epochs[-1]["test_acc_train_mode"]
        if bn == "off":
            assert final["test_acc_train_mode"] == final["test_acc"]
        by_class = final["test_acc_per_class"]
        assert list(by_class) == [str(k) for k in range(10)]
        assert min(by_class.values()) <= final["test_acc"] <= max(by_class.values())
        assert epochs[-1]["test_acc_per_class"] == by_class


def test_evaluating_in_training_mode_uses_each_batchs_statistics_and_changes_nothing():
    torch.manual_seed(0)
    model = discriminator("udacity-mlp", 32, 10, 1, 28, batch_norm=True)
    for _ in range(3):  # running statistics away from their start
        model.train()(torch.randn(64, 1, 28, 28) * 2 + 1)
    model.eval()
    x = torch.randint(0, 256, (96, 1, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 10, (96,))
    batches = Batches(x, y, 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    from utils.training import evaluate

    acc_eval, _ = evaluate(model, batches)
    acc_train, loss_train = evaluate(model, batches, batch_statistics=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training
    import copy

    twin = copy.deepcopy(model).train()
    with torch.no_grad():
        logits = torch.cat([twin(xb)[1] for xb, _ in batches.epoch(0)])
    assert acc_train == pytest.approx(100 * (logits.argmax(1) == y).float().mean().item())
    assert loss_train == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
    assert acc_eval != acc_train or evaluate(model, batches)[1] != loss_train
    # a last batch of one image is left out in training mode (BatchNorm needs two)
    one_over = Batches(x[:65], y[:65], 32).rebatched(32, 2)
    assert len(one_over) == 2 and len(Batches(x[:65], y[:65], 32)) == 3
    evaluate(model, one_over, batch_statistics=True)


def test_per_class_accuracy_counts_each_class_apart():
    class Fixed(nn.Module):
        num_classes = 3

        def forward(self, x):  # the prediction is the image's first pixel (0, 1 or 2)
            pred = ((x[:, 0, 0, 0] + 1) * 127.5).round().long()
            return x[:, 0, 0, 0], nn.functional.one_hot(pred, 3).float()

    preds = torch.tensor([0, 1, 1, 2, 0, 2, 1])
    labels = torch.tensor([0, 0, 1, 2, 2, 2, 1])
    x = preds.to(torch.uint8)[:, None, None, None].expand(7, 1, 2, 2).contiguous()
    from utils.training import evaluate

    acc, _, by_class = evaluate(Fixed(), Batches(x, labels, 3), per_class=True)
    assert acc == pytest.approx(500 / 7)
    assert by_class == [50.0, 100.0, 66.67]
    _, _, by_class = evaluate(Fixed(), Batches(x[:4], labels[:4], 3), per_class=True)
    assert by_class[2] == 100.0 and by_class[0] == 50.0


def test_optimizer_and_schedule_of_the_classifier():
    a = train_baseline.parse_args(["--recipe", "udacity-batchnorm"])
    assert (a.arch, a.dataset, a.epochs, a.drop_last, a.batch_norm) == ("udacity-mlp", "mnist",
                                                                        10, "off", "on")
    rt = Runtime(torch.device("cpu"))
    sgd = rt.optimizer("sgd", [nn.Parameter(torch.zeros(1))], 0.01)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0
    trainer = train_baseline.BaselineTrainer(train_baseline.resolve(["--recipe",
                                                                     "udacity-batchnorm"]),
                                             nn.Linear(1, 1), sgd, rt, None)
    trainer.model.blocks = None
    for epoch in range(10):
        trainer.begin_epoch(epoch)
        assert sgd.param_groups[0]["lr"] == 0.01  # no schedule


def test_simclrs_head_and_optimizer_are_seed_004s():
    """g: a linear layer without bias, BatchNorm, ReLU, then the output layer with bias;
    Adam with weight decay 1e-6 (seed 004's code)."""
    from models import ProjectionHead

    head = ProjectionHead(64, 64, 128)
    kinds = [type(m) for m in head.net]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert head.net[0].bias is None and head.net[3].bias is not None
    assert (head.net[0].in_features, head.net[1].num_features, head.net[3].out_features) == \
        (64, 64, 128)
    args = train_simclr.parse_args([])
    assert (args.lr, args.weight_decay, args.adam_step_cap) == (1e-3, 1e-6, 0)
    opt = Runtime(torch.device("cpu")).adam(head.parameters(), args.lr,
                                            weight_decay=args.weight_decay)
    assert opt.param_groups[0]["weight_decay"] == 1e-6
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)
