"""The ASR-hallucination chapter's own method, loaded from its `method` cells, against independent references:
WER against a separately written full-matrix Levenshtein recursion, the hallucination criterion on hand-made
transcripts, the exact fluency oracle against a count-based bigram language model, and the label-mismatch and
synthesis helpers against their definitions."""
import itertools

import numpy as np
import pytest
import torch

from perturb.harness.notebook_code import load_method


@pytest.fixture(scope="module")
def method():
    return load_method("asr-hallucinations")


def levenshtein_matrix(a, b):
    """Textbook Wagner-Fischer with the whole (len(a)+1) x (len(b)+1) table (independent of the chapter's rows)."""
    table = np.zeros((len(a) + 1, len(b) + 1), dtype=int)
    table[:, 0] = np.arange(len(a) + 1)
    table[0, :] = np.arange(len(b) + 1)
    for i, j in itertools.product(range(1, len(a) + 1), range(1, len(b) + 1)):
        table[i, j] = min(table[i - 1, j] + 1, table[i, j - 1] + 1, table[i - 1, j - 1] + (a[i - 1] != b[j - 1]))
    return int(table[-1, -1])


def ids(method, sentence):
    return [method.WORD_ID[w] for w in sentence.split()]


def test_edit_distance_and_wer_match_independent_levenshtein(method):
    rng = np.random.default_rng(0)
    refs, hyps = [], []
    for _ in range(300):
        ref = list(rng.integers(0, 5, size=rng.integers(0, 9)))
        hyp = list(rng.integers(0, 5, size=rng.integers(0, 9)))
        assert method.edit_distance(hyp, ref) == levenshtein_matrix(hyp, ref)
        if ref:
            refs.append(ref)
            hyps.append(hyp)
    expected = sum(levenshtein_matrix(h, r) for r, h in zip(refs, hyps)) / sum(len(r) for r in refs)
    assert method.word_error_rate(refs, hyps) == pytest.approx(expected, abs=1e-12)
    # Hand-made: one substitution, one deletion, one insertion, nothing.
    ref = "the old cat sees a blue ring".split()
    assert method.edit_distance("the bold cat sees a blue ring".split(), ref) == 1
    assert method.edit_distance("the old cat sees blue ring".split(), ref) == 1
    assert method.edit_distance("the old cat sees a a blue ring".split(), ref) == 1
    assert method.word_error_rate([ref, ref], [ref, []]) == pytest.approx(0.5)


def test_hallucination_criterion_on_hand_made_cases(method):
    ref = ids(method, "the old cat sees a blue ring")
    cases = {
        "the old cat sees a blue ring": "correct",
        "a old cat sees the blue ring": "phonetic error",        # only determiners differ: all content right
        "the bold cat sees a blue ring": "phonetic error",       # one rhyme swapped: 4 of 5 content words right
        "the bold hat sees a blue ring": "phonetic error",       # 2 of 5 wrong: similarity 3/5 > 2/5
        "the bold hat frees a blue ring": "hallucination",       # 3 of 5 wrong: similarity exactly 2/5
        "a tall dog finds the new king": "hallucination",        # fluent, nothing in common
        "the old cat sees a blue": "non-fluent",                 # wrong length
        "the old sees cat a blue ring": "non-fluent",            # words in impossible slots
        "ring blue a sees cat old the": "non-fluent",
    }
    for sentence, expected in cases.items():
        assert method.error_type(ids(method, sentence), ref) == expected, sentence
    assert method.semantic_similarity(ids(method, "the bold hat frees a blue ring"), ref) == pytest.approx(0.4)
    assert method.semantic_similarity([], ref) == 0.0
    assert method.is_fluent(ref) and not method.is_fluent(ref + ref[:1])


def test_fluency_oracle_agrees_with_a_bigram_language_model(method):
    """Sanity of replacing a language model's perplexity by grammar membership: a bigram model fit on 10,000
    sentences of the language gives every sentence of the language a lower perplexity than any non-fluent
    shuffle of it."""
    rng = np.random.default_rng(1)
    stock = method.random_sentences(8, rng)
    corpus = method.sample_sentences(10_000, rng, stock, 0.3)
    vocab = len(method.VOCAB)
    counts = np.full((vocab, vocab), 0.01)
    for sentence in corpus:
        path = [method.BOS, *sentence, method.EOS]
        np.add.at(counts, (path[:-1], path[1:]), 1)
    log_prob = np.log(counts / counts.sum(1, keepdims=True))

    def perplexity(tokens):
        path = [method.BOS, *tokens, method.EOS]
        return float(np.exp(-log_prob[path[:-1], path[1:]].mean()))

    for sentence in method.sample_sentences(200, rng, stock, 0.3):
        assert method.is_fluent(list(sentence))
        shuffled = list(rng.permutation(sentence))
        if not method.is_fluent(shuffled):
            assert perplexity(shuffled) > perplexity(list(sentence))


def test_label_mismatch_swaps_exactly_rho_of_the_transcripts(method):
    rng = np.random.default_rng(2)
    transcripts = np.unique(method.random_sentences(400, rng), axis=0)[:300]   # all distinct
    noisy, swapped = method.mismatch_transcripts(transcripts, 0.3, rng)
    assert len(swapped) == 90 and len(set(swapped.tolist())) == 90
    untouched = np.setdiff1d(np.arange(len(transcripts)), swapped)
    assert np.array_equal(noisy[untouched], transcripts[untouched])
    rows = {tuple(t) for t in transcripts.tolist()}
    for i in swapped:
        assert tuple(noisy[i]) in rows and not np.array_equal(noisy[i], transcripts[i])


def test_synthesis_and_decoding_shapes(method):
    rng = np.random.default_rng(3)
    templates = method.word_templates(rng)
    for first, second in method.RHYMES:
        a, b = templates[method.WORD_ID[first]], templates[method.WORD_ID[second]]
        assert np.array_equal(a[1:], b[1:]) and not np.allclose(a[0], b[0])
    sentences = method.random_sentences(5, rng)
    audio = method.synthesize(sentences, templates, rng, noise_sd=0.0)
    assert audio.shape == (5, 44, 16)
    assert np.all(audio[:, 0] == 0)                         # leading silence without recording noise
    torch.manual_seed(0)
    model = method.AttentionASR(16, len(method.VOCAB), hidden=16)
    tokens, attention = model.decode(torch.as_tensor(audio), max_steps=9)
    assert tokens.shape == (5, 9) and attention.shape == (5, 9, 44)
    assert torch.allclose(attention.sum(-1), torch.ones(5, 9))
    assert method.until_end([4, 5, method.EOS, 6]) == [4, 5] and method.until_end([4, 5]) == [4, 5]
    targets = torch.as_tensor(np.concatenate([sentences, np.full((5, 1), method.EOS)], 1))
    loss = method.transcript_loss(model, torch.as_tensor(audio), targets)
    assert loss.item() == pytest.approx(np.log(len(method.VOCAB)), rel=0.2)   # untrained: near uniform
