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
