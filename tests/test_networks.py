"""Tests for ddbook.networks and ddbook.resnet: shapes, parameter counts, seeds, pure functions."""
import pytest
import torch
import torch.nn.functional as F

from ddbook.networks import (AlexNet, ConvNet, VGG11, count_params, flatten_params,
                             functional_forward, get_network, network_names, unflatten_params)
from ddbook.resnet import ResNet18


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run this module single-threaded: with tiny batches, OpenMP threads mostly wait on each
    other, and on a busy 2-core machine that made these tests several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


FIXED_NAMES = [n for n in network_names() if "<" not in n]
CPU = "cpu"

# Conv 3x3 weights + bias: 3*128*9 + 128 = 3,584 (first layer), 128*128*9 + 128 = 147,584 (others);
# instance/batch/group norm: 2*128 = 256 per layer; Linear: 128*h*w*K + K.
# ResNet-18 (bias-free convs; 2C affine per norm), per papers.md §1.1's layer list:
#   stem 3*64*9 + 128 = 1,856; layer1 2*(2*64*64*9 + 256) = 147,968;
#   layer2 (64*128*9 + 128*128*9 + 512 + 64*128 + 256) + (2*128*128*9 + 512) = 525,568;
#   layer3 (128*256*9 + 256*256*9 + 1,024 + 128*256 + 512) + (2*256*256*9 + 1,024) = 2,099,712;
#   layer4 (256*512*9 + 512*512*9 + 2,048 + 256*512 + 1,024) + (2*512*512*9 + 2,048) = 8,393,728;
#   trunk = 11,168,832; + Linear(512, 10) 5,130 = 11,173,962.
# AlexNet: 3*128*25+128 + 128*192*25+192 + 192*256*9+256 + 256*192*9+192 + 192*192*9+192
#   = 1,841,472, + Linear(192*4*4, 10) 30,730 = 1,872,202.
# VGG-11: convs 1,792 + 73,856 + 295,168 + 590,080 + 1,180,160 + 3*2,359,808 = 9,220,480;
#   norms 2*(64+128+256+256+512*4) = 5,504; Linear(512, 10) 5,130: 9,231,114.
PARAM_COUNTS = [
    ("ConvNet", 10, (32, 32), 320_010),  # papers.md §1.1: 3,584 + 2*147,584 + 3*256 + 20,490
    ("ConvNet", 100, (32, 32), 504_420),  # papers.md §1.1: Linear(2048, 100) = 204,900
    ("ConvNetD4", 200, (64, 64), 857_160),  # papers.md §1.1: 3,584 + 3*147,584 + 4*256 + 409,800
    ("ConvNetBN", 10, (32, 32), 320_010),  # BN running stats are buffers, not parameters
    ("ConvNetNN", 10, (32, 32), 319_242),  # 320,010 - 3*256 norm parameters
    # Layer norm over (C, H, W) before pooling: 2*128*(32*32 + 16*16 + 8*8) = 344,064
    ("ConvNetLN", 10, (32, 32), 320_010 - 3 * 256 + 344_064),
    ("ConvNetW32", 10, (32, 32), 24_714),  # 896 + 2*9,248 + 3*64 + Linear(512, 10) 5,130
    ("ResNet18", 10, (32, 32), 11_173_962),
    ("ResNet18BN", 10, (32, 32), 11_173_962),
    ("ResNet18_AP", 10, (32, 32), 11_168_832 + 512 * 4 * 4 * 10 + 10),  # 4x4 map, no final pool
    ("ResNet18BN_Tiny", 200, (64, 64), 11_168_832 + 512 * 200 + 200),  # stride-2 stem, same trunk
    ("AlexNet", 10, (32, 32), 1_872_202),
    ("VGG11", 10, (32, 32), 9_231_114),
    ("VGG11BN", 10, (32, 32), 9_231_114),
]


@pytest.mark.parametrize("name,num_classes,im_size,expected", PARAM_COUNTS)
def test_parameter_counts(name, num_classes, im_size, expected):
    model = get_network(name, num_classes, im_size, seed=0, device=CPU)
    got = count_params(model)
    assert got == expected, (f"{name} ({num_classes} classes, {im_size}): "
                             f"{got:,} params, want {expected:,}")


@pytest.mark.parametrize("name", FIXED_NAMES + ["ConvNetD1", "ConvNetD4", "ConvNetW64"])
def test_output_shapes(name):
    size = (64, 64) if "Tiny" in name else (32, 32)
    model = get_network(name, 7, size, seed=0, device=CPU)
    with torch.no_grad():  # batch 1 and no graph: ResNet-18 is slow on a CPU
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 7), f"{name} on {size} gives {tuple(out.shape)}, want (1, 7)"
    assert torch.isfinite(out).all(), f"{name} produced non-finite logits"


@pytest.mark.parametrize("name,channels,size", [
    ("ConvNetD4", 3, (64, 64)), ("ConvNetD5", 3, (128, 128)), ("ConvNet", 1, (28, 28)),
    ("ConvNet", 3, (48, 40)), ("ConvNetLN", 3, (64, 64)), ("AlexNet", 1, (28, 28)),
    ("VGG11", 1, (28, 28))])
def test_other_input_sizes(name, channels, size):
    model = get_network(name, 5, size, channels=channels, width=16 if "ConvNet" in name else None,
                        seed=0, device=CPU)
    out = model(torch.randn(2, channels, *size))
    assert out.shape == (2, 5), f"{name} on {channels}x{size} gives {tuple(out.shape)}"


@pytest.mark.parametrize("norm", ["instance", "batch", "layer", "group", "none"])
@pytest.mark.parametrize("pooling", ["avg", "max", "none"])
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "leakyrelu"])
def test_convnet_options(norm, pooling, activation):
    model = ConvNet(3, 4, width=8, depth=2, norm=norm, pooling=pooling, activation=activation,
                    im_size=(16, 16))
    out = model(torch.randn(3, 3, 16, 16))
    assert out.shape == (3, 4), f"ConvNet({norm}, {pooling}, {activation}) gives {tuple(out.shape)}"


def test_parameter_order_follows_reference():
    conv = [n for n, _ in ConvNet(depth=2).named_parameters()]
    want = ["features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias",
            "features.4.weight", "features.4.bias", "features.5.weight", "features.5.bias",
            "classifier.weight", "classifier.bias"]
    assert conv == want, f"ConvNet parameter order {conv} differs from the reference {want}"
    block = [n for n, _ in ResNet18().layer2[0].named_parameters()]
    want = ["conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight", "bn2.weight", "bn2.bias",
            "shortcut.0.weight", "shortcut.1.weight", "shortcut.1.bias"]
    assert block == want, f"ResNet block parameter order {block} differs from the reference {want}"


def test_flat_parameters_round_trip():
    model = get_network("ConvNetBN", 10, seed=1, device=CPU, width=16)
    flat = flatten_params(model)
    reference = torch.cat([p.reshape(-1) for p in model.parameters()])  # papers.md §1.6
    assert torch.equal(flat, reference), "flatten_params must concatenate parameters() in order"
    named = unflatten_params(model, flat)
    for (name, p), (key, q) in zip(model.named_parameters(), named.items()):
        assert name == key and torch.equal(p, q), f"unflatten_params mismatch at {name} / {key}"
    with pytest.raises(ValueError, match="shape"):
        unflatten_params(model, flat[:-1])


@pytest.mark.parametrize("name,train", [
    ("ConvNet", True), ("ConvNetBN", True), ("ConvNetBN", False), ("ConvNetLN", True),
    ("AlexNet", True), ("ResNet18BN", False)])
def test_functional_forward_matches_module(name, train):
    model = get_network(name, 10, seed=2, device=CPU, width=16 if "ConvNet" in name else None)
    model.train(train)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(x)
        got_flat = functional_forward(model, flatten_params(model), x)
        got_dict = functional_forward(model, dict(model.named_parameters()), x)
    assert torch.allclose(got_flat, want, atol=1e-6, rtol=0), f"{name}: flat functional != module"
    assert torch.allclose(got_dict, want, atol=1e-6, rtol=0), f"{name}: dict functional != module"


def test_second_order_through_flat_vector():
    model = get_network("ConvNet", 10, (16, 16), seed=3, device=CPU, width=8)
    gen = torch.Generator().manual_seed(0)
    x_syn = torch.randn(6, 3, 16, 16, generator=gen, requires_grad=True)
    y = torch.arange(6) % 10
    lr = torch.tensor(0.01, requires_grad=True)
    start = flatten_params(model).requires_grad_(True)
    loss = F.cross_entropy(functional_forward(model, start, x_syn), y)
    (grad,) = torch.autograd.grad(loss, start, create_graph=True)
    F.cross_entropy(model(x_syn.detach()), y).backward()  # the same gradient, the nn.Module way
    module_grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    assert torch.allclose(grad, module_grad, atol=1e-6), "functional gradient != module gradient"
    stepped = start - lr * grad  # one unrolled SGD step, as in MTT
    F.cross_entropy(functional_forward(model, stepped, x_syn), y).backward()
    assert x_syn.grad is not None and x_syn.grad.abs().sum() > 0, "no gradient reached the images"
    assert lr.grad is not None and torch.isfinite(lr.grad), "no finite gradient reached the lr"


def test_vmap_over_flat_parameters():
    model = get_network("ConvNet", 10, (16, 16), seed=4, device=CPU, width=8)
    flat = flatten_params(model)
    stacked = torch.stack([flat, flat + 0.01 * torch.randn_like(flat)])  # (2, P): two students
    x = torch.randn(2, 3, 3, 16, 16)  # (students, B, C, H, W)
    out = torch.func.vmap(lambda p, xb: functional_forward(model, p, xb))(stacked, x)
    one = functional_forward(model, stacked[1], x[1])
    assert out.shape == (2, 3, 10), f"vmapped logits have shape {tuple(out.shape)}"
    assert torch.allclose(out[1], one, atol=1e-5), "vmapped student differs from a single one"


def test_seed_reproducible_and_global_rng_untouched():
    state = torch.get_rng_state()
    a = flatten_params(get_network("ConvNet", 10, seed=5, device=CPU, width=16))
    b = flatten_params(get_network("ConvNet", 10, seed=5, device=CPU, width=16))
    c = flatten_params(get_network("ConvNet", 10, seed=6, device=CPU, width=16))
    assert torch.equal(a, b), "same seed must give identical parameters"
    assert not torch.equal(a, c), "different seeds must give different parameters"
    assert torch.equal(state, torch.get_rng_state()), "get_network(seed=...) moved the global RNG"
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    d = flatten_params(get_network("ConvNet", 10, generator=g1, device=CPU, width=16))
    e = flatten_params(get_network("ConvNet", 10, generator=g2, device=CPU, width=16))
    f = flatten_params(get_network("ConvNet", 10, generator=g1, device=CPU, width=16))
    assert torch.equal(d, e), "generators in the same state must give identical parameters"
    assert not torch.equal(d, f), "a generator must advance between networks"


def test_channels_last_matches_contiguous():
    x = torch.randn(3, 3, 32, 32)
    for name in ["ConvNet", "ConvNetBN"]:
        outs = [get_network(name, 10, seed=0, device=CPU, width=16, memory_format=fmt)(x)
                for fmt in (torch.contiguous_format, torch.channels_last)]
        assert torch.allclose(*outs, atol=1e-5), f"{name}: channels-last output differs"


@pytest.mark.parametrize("build,match", [
    (lambda: get_network("ConvNetXL", 10), "valid names: .*ConvNetBN.*ResNet18"),
    (lambda: get_network("ResNet50", 10), "valid names"),
    (lambda: ConvNet(norm="batchnorm"), "unknown norm 'batchnorm'; valid: .*'batch'"),
    (lambda: ConvNet(pooling="maxpooling"), "unknown pooling"),
    (lambda: ConvNet(activation="gelu"), "unknown activation"),
    (lambda: ResNet18(norm="layer"), "unknown ResNet norm"),
    (lambda: VGG11(norm="group"), "unknown ResNet norm"),
    (lambda: get_network("ResNet18", 10, width=32), "ConvNet family only"),
    (lambda: get_network("ConvNetW32", 10, width=64), "fixes width=32"),
    (lambda: get_network("ConvNet", 10, seed=0, generator=torch.Generator()), "not both"),
    (lambda: ConvNet(depth=6, im_size=(32, 32)), "too small"),
    (lambda: AlexNet(im_size=(4, 4)), "too small"),
    (lambda: ResNet18(im_size=(8, 8)), "too small"),
])
def test_bad_input_raises_value_error(build, match):
    with pytest.raises(ValueError, match=match):
        build()


# --- The fused CPU block tails (networks.ConvNetFeatures) ---------------------------------------
# On the CPU, GroupNorm(C, C) -> ReLU -> AvgPool2d(2) (and ReLU -> AvgPool2d(2) after other norms)
# run as one autograd op with fewer passes over memory (benchmarks/README.md). These tests pin that
# it is the same function as the stock modules run one by one, to 1e-5, in values and gradients.

def _stock_forward(model):
    """``model`` with its feature modules applied one by one, as a plain nn.Sequential would."""
    plain = torch.nn.Sequential(*model.features)
    return lambda x: model.classifier(torch.flatten(plain(x), 1))


@pytest.mark.parametrize("name,fmt", [
    ("ConvNet", torch.contiguous_format), ("ConvNet", torch.channels_last),
    ("ConvNetBN", torch.contiguous_format), ("ConvNetBN", torch.channels_last),
    ("ConvNetLN", torch.contiguous_format), ("ConvNetNN", torch.contiguous_format),
    ("ConvNetGN", torch.contiguous_format), ("ConvNetD4", torch.contiguous_format)])
@pytest.mark.parametrize("train", [True, False])
def test_fused_blocks_match_stock_modules(name, fmt, train):
    size = (32, 32)
    model = get_network(name, 10, size, seed=7, device=CPU, width=16, memory_format=fmt)
    model.train(train)
    x = torch.randn(5, 3, *size, generator=torch.Generator().manual_seed(1), requires_grad=True)
    params = list(model.parameters())
    results = []
    for forward in (model, _stock_forward(model)):
        state = {k: v.clone() for k, v in model.state_dict().items()}  # BN running stats move
        out = forward(x)
        grads = torch.autograd.grad((out * torch.linspace(-1, 1, 10)).square().sum(), [x, *params])
        model.load_state_dict(state)
        results.append((out, grads))
    (out, grads), (want, want_grads) = results
    assert torch.allclose(out, want, atol=1e-5, rtol=1e-5), f"{name}: fused forward differs"
    names = ["x"] + [n for n, _ in model.named_parameters()]
    for n, g, w in zip(names, grads, want_grads):
        assert torch.allclose(g, w, atol=1e-5, rtol=1e-4), (
            f"{name} {fmt}: gradient of {n} differs by {(g - w).abs().max():.2e}")


@pytest.mark.parametrize("grad_fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("out_fmt", [torch.contiguous_format, torch.channels_last])
def test_relu_pool_gradient_is_bit_identical_to_the_stock_kernels(out_fmt, grad_fmt):
    """The one-pass ReLU + 2x2 pool gradient (either layout) equals avg_pool2d_backward followed
    by threshold_backward bit for bit: evaluations keep their numbers whichever path runs."""
    from ddbook.networks import _relu_pool_grad
    g = torch.Generator().manual_seed(3)
    out = torch.randn(4, 6, 8, 10, generator=g).contiguous(memory_format=out_fmt)
    grad = torch.randn(4, 6, 4, 5, generator=g).contiguous(memory_format=grad_fmt)
    want = torch.ops.aten.threshold_backward(torch.ops.aten.avg_pool2d_backward(
        grad, out, [2, 2], [2, 2], [0, 0], False, True, None), out, 0)
    got = _relu_pool_grad(grad, out)
    assert got.shape == want.shape and torch.equal(got, want)
    assert got.is_contiguous(memory_format=out_fmt), "the gradient keeps the activation's layout"


def test_fused_instance_norm_is_group_norm_c_c():
    """Same parameters (names, count) as nn.GroupNorm(C, C); maths to gradgradcheck in double."""
    from ddbook.networks import _InstanceReLUPool
    model = ConvNet(width=8, depth=1, im_size=(8, 8))
    norm = model.features[1]
    assert type(norm) is torch.nn.GroupNorm and norm.num_groups == norm.num_channels == 8
    assert [n for n, _ in norm.named_parameters()] == ["weight", "bias"] and norm.eps == 1e-5
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 4, 6, dtype=torch.double, generator=gen, requires_grad=True)
    w = torch.randn(3, dtype=torch.double, generator=gen, requires_grad=True)
    b = torch.randn(3, dtype=torch.double, generator=gen, requires_grad=True)

    def fused(x, w, b):
        return _InstanceReLUPool.apply(x, w, b, 1e-5)[0]

    def stock(x, w, b):
        return F.avg_pool2d(F.relu(F.group_norm(x, 3, w, b, 1e-5)), 2)

    assert torch.allclose(fused(x, w, b), stock(x, w, b), atol=1e-12)
    assert torch.autograd.gradcheck(fused, (x, w, b))
    assert torch.autograd.gradgradcheck(fused, (x, w, b))


def test_second_order_through_fused_blocks():
    """create_graph=True on an nn.Module (leaf parameters: the fused path) gives the stock
    second-order gradients, e.g. for a gradient-norm penalty."""
    model = get_network("ConvNet", 10, (16, 16), seed=8, device=CPU, width=8)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(3), requires_grad=True)
    y = torch.arange(4)
    params = list(model.parameters())
    out = []
    for forward in (model, _stock_forward(model)):
        grads = torch.autograd.grad(F.cross_entropy(forward(x), y), params, create_graph=True)
        penalty = sum(g.square().sum() for g in grads)
        out.append(torch.autograd.grad(penalty, [x, *params]))
    for name, g, w in zip(["x"] + [n for n, _ in model.named_parameters()], *out):
        assert torch.allclose(g, w, atol=1e-5, rtol=1e-4), f"second-order grad of {name} differs"


@pytest.mark.parametrize("name", ["ConvNet", "ConvNetBN"])
def test_per_example_gradients_with_vmap(name):
    """torch.func.vmap(grad(...)) through the fused ops (as analysis.per_example_grad_norms)."""
    from torch.func import functional_call, grad, vmap
    model = get_network(name, 10, (16, 16), seed=9, device=CPU, width=8).eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def loss(p, x, y):
        return F.cross_entropy(functional_call(model, (p, buffers), (x[None],)), y[None])

    x, y = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(4)), torch.arange(3)
    per_example = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    want = torch.autograd.grad(F.cross_entropy(_stock_forward(model)(x[1:2]), y[1:2]),
                               list(model.parameters()))
    for (k, g), w in zip(per_example.items(), want):
        assert torch.allclose(g[1], w, atol=1e-6), f"{name}: per-example gradient of {k} differs"


def test_fused_path_is_taken_on_the_cpu():
    """The speed-up depends on the fused op running: a hook on the GroupNorm must not fire."""
    model = get_network("ConvNet", 10, (16, 16), seed=0, device=CPU, width=8)
    calls = []
    model.features[1].register_forward_hook(lambda *a: calls.append(1))
    model(torch.randn(2, 3, 16, 16))
    assert not calls, "ConvNet's instance norm ran as a separate module on the CPU"
    flat = flatten_params(model).requires_grad_(True)
    functional_forward(model, flat, torch.randn(2, 3, 16, 16))  # a student: stock GroupNorm
    assert calls, "a functional student (weights with a history) should keep nn.GroupNorm"


def test_memory_format_default():
    bn = get_network("ConvNetBN", 10, seed=0, device=CPU, width=8)
    inn = get_network("ConvNet", 10, seed=0, device=CPU, width=8)
    w_bn, w_in = bn.features[0].weight, inn.features[0].weight
    assert w_bn.is_contiguous(memory_format=torch.channels_last) and not w_bn.is_contiguous()
    assert w_in.is_contiguous()


def test_keep_cpu_memory_is_idempotent():
    from ddbook.networks import keep_cpu_memory, release_cpu_memory
    first = keep_cpu_memory()
    assert isinstance(first, bool) and keep_cpu_memory() == first
    assert isinstance(release_cpu_memory(), bool)
