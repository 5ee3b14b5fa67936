"""The caption language, its tokenizer, the text encoder and cross-attention (chapter 10)."""

import pytest
import torch

from diffcourse.text import (
    HELD_OUT,
    KIND_WEIGHTS,
    KINDS,
    MAX_TOKENS,
    NUMBERS,
    PAD,
    START,
    VOCAB,
    CrossAttention,
    TextEncoder,
    caption_digits,
    caption_family,
    caption_mask,
    detokenize,
    random_captions,
    tokenize,
)

ALL = [c for k in KINDS for c in caption_family(k)]


def test_tokenizer_round_trips_every_generated_caption_and_the_null_one():
    captions = ALL + ["", "seven and not a three and an odd digit"]
    tokens = tokenize(captions)
    assert tokens.shape == (len(captions), MAX_TOKENS) and tokens.dtype == torch.long
    assert detokenize(tokens) == captions
    assert (tokens[-2, 1:] == PAD).all()  # the null caption: <start> and padding
    assert detokenize(tokenize("two", length=3)) == ["two"]


def test_tokenizer_names_the_unknown_word_and_the_vocabulary():
    with pytest.raises(ValueError, match="'purple'.*vocabulary.*even"):
        tokenize("a purple digit")
    with pytest.raises(ValueError, match="length"):
        tokenize("an even digit above five", length=3)
    with pytest.raises(TypeError, match="str"):
        tokenize([7])
    with pytest.raises(ValueError, match="start"):
        detokenize(torch.zeros(1, 4, dtype=torch.long))


@pytest.mark.parametrize(
    "caption,digits",
    [
        ("seven", {7}),
        ("an even digit", {0, 2, 4, 6, 8}),
        ("a digit above five", {6, 7, 8, 9}),
        ("not a three", set(range(10)) - {3}),
        ("an odd digit below four", {1, 3}),
        ("an even digit above two and not a six", {4, 8}),
        ("", set(range(10))),
        ("a digit", set(range(10))),
    ],
)
def test_caption_digits(caption, digits):
    assert caption_digits(caption) == digits
    assert caption_mask(caption)[0].nonzero()[:, 0].tolist() == sorted(digits)


@pytest.mark.parametrize(
    "caption",
    [
        "digit even",
        "not seven",
        "an even",
        "a digit above",
        "a digit above even",
        "and",
        "seven and",
        "an even digit nine",
    ],
)
def test_malformed_captions_are_refused(caption):
    with pytest.raises(ValueError, match="caption"):
        caption_digits(caption)


def test_a_caption_naming_no_digit_is_refused():
    with pytest.raises(ValueError, match="names no digit"):
        caption_digits("an even digit above eight")


def test_random_captions_are_true_seeded_and_never_held_out():
    labels = torch.arange(10).repeat(300)
    caps = random_captions(labels, torch.Generator().manual_seed(0))
    assert caps == random_captions(labels, torch.Generator().manual_seed(0))
    assert all(int(y) in caption_digits(c) for c, y in zip(caps, labels))
    assert not set(caps) & set(HELD_OUT)
    # nor any caption that names the same digits as a held-out one, in other words
    held_sets = {caption_digits(c) for c in HELD_OUT}
    assert not {caption_digits(c) for c in caps} & held_sets
    assert "an odd digit above six" not in caps and "an odd digit above four" in caps
    for kind in KINDS:  # every kind shows up
        assert set(caps) & set(caption_family(kind)), kind
    for held in HELD_OUT:  # ... and every word of a held-out caption
        assert all(any(w in c.split() for c in caps) for w in held.split())
    with pytest.raises(ValueError, match="0..9"):
        random_captions(torch.tensor([10]))
    with pytest.raises(ValueError, match="held_out"):  # no parity caption would be left for 0
        random_captions(labels, held_out=["an even digit"])
    with pytest.raises(TypeError, match="labels"):
        random_captions([1, 2])


def test_a_caption_names_its_digits_unevenly_where_held_out_captions_are_missing():
    """Exercise 10.3's solution: "an even digit" and "a digit above three" are drawn equally often
    for each digit they name (one parity caption per digit; five range captions per digit), while
    "an even digit above three" is drawn for 4 as one of three parity-and-range captions and for 6
    and 8 as one of five (the held-out captions take two of 4's)."""
    n = 20000
    share = {}
    for d in (4, 6, 8):
        caps = random_captions(torch.full((n,), d), torch.Generator().manual_seed(d))
        share[d] = {c: caps.count(c) / n for c in set(caps)}
    se = (0.1 / n) ** 0.5  # a standard error for shares of 0.1 or less
    kinds = dict(zip(KINDS, KIND_WEIGHTS))
    for d in (4, 6, 8):
        assert abs(share[d]["an even digit"] - kinds["parity"]) < 5 * se
        assert abs(share[d]["a digit above three"] - kinds["range"] / 5) < 5 * se
        per = 3 if d == 4 else 5
        assert abs(share[d]["an even digit above three"] - kinds["parity and range"] / per) < 5 * se


def test_vocabulary_holds_every_number_word():
    assert set(NUMBERS) <= set(VOCAB) and len(set(VOCAB)) == len(VOCAB)


def test_cross_attention_ignores_what_sits_under_the_padding():
    torch.manual_seed(0)
    block = CrossAttention(channels=8, context_dim=6, heads=2)
    torch.nn.init.normal_(block.out.weight)  # the block starts as the identity: give it a use
    h = torch.randn(3, 8, 4, 4)
    context = torch.randn(3, 5, 6)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    out = block(h, context, mask)
    garbage = torch.where(mask[..., None], context, 100 * torch.randn(3, 5, 6))
    assert torch.equal(block(h, garbage, mask), out)
    # more padding at the end changes nothing either
    longer = torch.cat([context, torch.randn(3, 4, 6)], 1)
    assert torch.allclose(
        block(h, longer, torch.cat([mask, torch.zeros(3, 4, dtype=torch.bool)], 1)), out, atol=1e-6
    )
    assert not torch.allclose(
        block(h, context.flip(0), mask), out
    )  # the tokens themselves do matter


def test_text_encoder_features_do_not_depend_on_the_padding_length():
    torch.manual_seed(0)
    enc = TextEncoder(dim=16, layers=2, heads=2).eval()
    caps = ["seven", "an even digit above two and not a six"]
    short, mask_s = enc(tokenize(caps, length=10))
    long, mask_l = enc(tokenize(caps, length=MAX_TOKENS))
    assert torch.equal(mask_l[:, :10], mask_s) and not mask_l[:, 10:].any()
    assert torch.allclose(long[:, :10][mask_s], short[mask_s], atol=1e-6)


# ---- measuring ------------------------------------------------------------------------------------------
from diffcourse.text import caption_references, satisfied  # noqa: E402


class _Oracle(torch.nn.Module):
    """A 'judge' of 1x1 'images' whose single pixel holds the digit: logits peak at that digit."""

    def forward(self, x):
        return torch.nn.functional.one_hot(x.flatten(1)[:, 0].long(), 10).float()


def test_satisfied_reads_the_judge_against_the_caption():
    x = torch.tensor([7.0, 3.0, 4.0, 9.0]).reshape(4, 1, 1, 1)
    caps = ["seven", "not a three", "an even digit above three", "an odd digit below five"]
    assert satisfied(_Oracle(), x, caps).tolist() == [True, False, True, False]
    with pytest.raises(ValueError, match="one image per caption"):
        satisfied(_Oracle(), x, caps[:2])


def test_caption_references_floor_and_ceiling():
    y = torch.arange(10).repeat(3)
    x = y.float().reshape(-1, 1, 1, 1)
    caps = ["seven", "an even digit"]
    ref = caption_references(_Oracle(), caps, x, y)
    assert torch.allclose(ref.floor, torch.tensor([0.1, 0.5])) and torch.equal(
        ref.ceiling, torch.ones(2)
    )
    assert ref.x.shape[0] == ref.k.shape[0] == 3 + 15
    assert caption_mask([caps[k] for k in ref.k.tolist()])[
        torch.arange(18), ref.x.flatten().long()
    ].all()
    wrong = caption_references(lambda z: _Oracle()((z + 1) % 10), caps, x, y)  # a judge off by one
    assert torch.equal(wrong.ceiling, torch.zeros(2)) and torch.equal(wrong.floor, ref.floor)
    with pytest.raises(ValueError, match="satisfies"):
        caption_references(_Oracle(), ["seven"], x[:5], y[:5])
    # found by fuzzing: a negative label indexed the caption mask from its end
    with pytest.raises(ValueError, match="y_real"):
        caption_references(_Oracle(), caps, x, torch.cat([y[:-1], torch.tensor([-3])]))
    with pytest.raises(ValueError, match="y_real"):
        caption_references(_Oracle(), caps, x, torch.cat([y[:-1], torch.tensor([10])]))
    with pytest.raises(TypeError, match="y_real"):
        caption_references(_Oracle(), caps, x, y.tolist())
    with pytest.raises(ValueError, match="y_real"):
        caption_references(_Oracle(), caps, x, y[:-1])


def test_token_ids_past_the_vocabulary_and_float_masks_are_refused():
    """Found by fuzzing: an id past the vocabulary reached nn.Embedding (IndexError), a negative one
    read as the last word; a float mask became an additive bias."""
    from diffcourse.text import masked_attention

    enc = TextEncoder(dim=8, layers=1)
    for bad in (len(VOCAB), -1):
        tokens = tokenize(["one"] * 2)
        tokens[1, 1] = bad
        with pytest.raises(ValueError, match=r"^tokens must be ids in 0\.\."):
            enc(tokens)
        with pytest.raises(ValueError, match=r"^tokens must be ids in 0\.\."):
            detokenize(tokens)
    with pytest.raises(TypeError, match="^length must be an int"):
        tokenize("one", length=2.0)
    q = torch.randn(2, 3, 8)
    with pytest.raises(TypeError, match="^mask must be a bool tensor"):
        masked_attention(q, q, q, torch.ones(2, 3), heads=2)


def test_a_caption_must_start_with_its_start_token_and_heads_be_positive():
    """Found by fuzzing: a row without <start> left the attention no key (NaN); heads = 0 divided
    by zero."""
    enc = TextEncoder(dim=8, layers=1)
    tokens = tokenize(["one", "two"])
    tokens[0, 0] = PAD
    with pytest.raises(ValueError, match="^every row of tokens must start with <start>"):
        enc(tokens)
    # a word after padding, or a second <start>: the mask would drop padding from inside a caption
    for row, col, value in ((0, 1, PAD), (1, 2, START)):
        tokens = tokenize(["an even digit", "two"])
        tokens[row, col] = value
        with pytest.raises(ValueError, match="then words, then padding only"):
            enc(tokens)
        with pytest.raises(ValueError, match="then words, then padding only"):
            detokenize(tokens)  # the same check: it read such a row as another caption
    with pytest.raises(ValueError, match="^heads must be an int >= 1"):
        CrossAttention(8, 8, heads=0)


def test_no_labels_have_no_captions_and_no_real_digits_are_named():
    """random_captions of no label failed inside torch's multinomial(); caption_references of no
    real digit blamed the captions, not x_real."""
    from diffcourse.models import ConvClassifier
    from diffcourse.text import caption_references

    assert random_captions(torch.empty(0, dtype=torch.long)) == []
    judge = ConvClassifier(channels=1, size=8, num_classes=10, width=8, T=None)
    none, labels = torch.empty(0, 1, 8, 8), torch.empty(0, dtype=torch.long)
    with pytest.raises(ValueError, match="^x_real must hold at least one sample"):
        caption_references(judge, ["an even digit"], none, labels)
