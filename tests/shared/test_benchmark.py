"""shared.benchmark: FLOP counting that includes attention (fused kernels too), the timing helper."""
import torch

from shared.benchmark import Timing, count_flops, time_fn


def test_count_flops_includes_eval_mode_multihead_attention():
    b, n, d = 2, 10, 64
    mha = torch.nn.MultiheadAttention(d, 4, batch_first=True).eval()
    x = torch.randn(b, n, d)

    def fwd():
        with torch.no_grad():
            mha(x, x, x)

    qkv = 2 * b * n * d * 3 * d
    scores_and_mix = 2 * (2 * b * n * n * d)  # QK^T and attention @ V over all heads
    out_proj = 2 * b * n * d * d
    assert count_flops(fwd) == qkv + scores_and_mix + out_proj
    assert torch.backends.mha.get_fastpath_enabled()  # restored after counting


def test_count_flops_of_sdpa_on_cpu():
    q = torch.randn(2, 4, 10, 16)
    assert count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q)) == 2 * (2 * 2 * 4 * 10 * 10 * 16)


def test_timing_statistics():
    t = Timing([1.0, 2.0, 4.0])
    assert t.median == 2.0 and t.items_per_s(10) == 5.0 and t.spread == 1.5
    assert t.tflops(4e12) == 2.0 and t.percent_of_peak(4e12, 4.0) == 50.0 and t.percent_of_peak(1, None) is None
    calls = []
    timing = time_fn(lambda: calls.append(1), "cpu", warmup=2, repeats=3, inner=2)
    assert len(calls) == 2 + 3 * 2 and len(timing.seconds) == 3
