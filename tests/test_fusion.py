import pytest
import torch

from audio_repr.fusion import WeightedLayerSum, align_to_stride, fuse, mean_max_pool, resolve_layers

NAMES = ["conv1", "conv2", "fc"]


def test_resolve_layers():
    assert resolve_layers(None, NAMES, "fc", ["conv2", "fc"]) == ["fc"]
    assert resolve_layers("fusion", NAMES, "fc", ["conv2", "fc"]) == ["conv2", "fc"]
    assert resolve_layers("all", NAMES, "fc", []) == NAMES
    assert resolve_layers("conv1,fc", NAMES, "fc", []) == ["conv1", "fc"]
    assert resolve_layers([0, -1, "0"], NAMES, "fc", []) == ["conv1", "fc"]
    with pytest.raises(ValueError, match="unknown layer"):
        resolve_layers(["x"], NAMES, "fc", [])


def test_align_and_fuse():
    a = torch.arange(2 * 9 * 2, dtype=torch.float32).reshape(2, 9, 2)    # stride 2, 9 steps
    b = torch.randn(2, 4, 3)                                              # stride 4, 4 steps
    al = align_to_stride(a, 2)
    assert al.shape == (2, 4, 2) and torch.equal(al[:, 0], torch.maximum(a[:, 0], a[:, 1]))
    f = fuse({"a": a, "b": b}, {"a": 2, "b": 4})
    assert f.shape == (2, 4, 5) and torch.equal(f[..., 2:], b) and torch.equal(f[..., :2], al)
    x = torch.randn(7, 3)
    assert torch.allclose(mean_max_pool(x), x.mean(0) + x.max(0).values)


def test_weighted_layer_sum_trains():
    layers = [torch.randn(4, 10, 8) for _ in range(3)]
    wls = WeightedLayerSum(3)
    assert torch.allclose(wls(layers), sum(layers) / 3, atol=1e-6)        # equal weights at start
    target = layers[2]
    opt = torch.optim.Adam(wls.parameters(), lr=0.1)
    for _ in range(100):
        opt.zero_grad()
        loss = (wls(layers) - target).pow(2).mean()
        loss.backward()
        opt.step()
    assert torch.softmax(wls.weights, 0)[2] > 0.9
    ln = WeightedLayerSum(3, layer_norm=True)(layers)
    assert torch.allclose(ln.mean(-1), torch.zeros(4, 10), atol=1e-5)
    with pytest.raises(ValueError, match="expected 3 layers"):
        wls(layers[:2])
