"""Evaluation metrics on Chinese and English, against values worked out by hand."""

from __future__ import annotations

import pytest

from service.core.evaluation import metrics as m

REF_ZH = "华夏的风格不是很固定,最近偏向银行。"


def test_units_split_cjk_by_character_and_latin_by_word():
    assert m.units("刚毕业手上有12000元,The Cat!") == [
        "刚",
        "毕",
        "业",
        "手",
        "上",
        "有",
        "12000",
        "元",
        "the",
        "cat",
    ]
    assert m.units("ＡＢＣ，　ｄｅｆ") == ["abc", "def"]  # full-width letters and spaces fold (NFKC)


def test_exact_match_ignores_punctuation_case_and_width():
    assert m.exact_match("华夏。", "华夏") == 1.0
    assert m.exact_match("Hello, World", "hello world!") == 1.0
    assert m.exact_match("华夏基金", "华夏") == 0.0


def test_char_f1_chinese():
    # answer: 10 characters, all in the 16-character reference: P = 1, R = 10/16, F1 = 20/26.
    assert m.char_f1("华夏的风格不是很固定", REF_ZH) == pytest.approx(20 / 26)
    # bag overlap ignores order: 3 of 3 characters shared.
    assert m.char_f1("夏华的", "华夏的") == 1.0
    assert m.char_f1("", REF_ZH) == 0.0
    assert m.char_f1("", "") == 1.0


def test_char_f1_english_counts_words():
    # the cat sat | the cat sat on the mat: overlap 3, P = 1, R = 1/2, F1 = 2/3.
    assert m.char_f1("The cat sat", "the cat sat on the mat") == pytest.approx(2 / 3)


def test_rouge_l_uses_order():
    assert m.rouge_l("华夏的风格不是很固定", REF_ZH) == pytest.approx(20 / 26)
    # LCS of "夏华的" and "华夏的" is 2 (华的 or 夏的): P = R = 2/3.
    assert m.rouge_l("夏华的", "华夏的") == pytest.approx(2 / 3)
    assert m.rouge_l("b a c", "a b c") == pytest.approx(2 / 3)


def test_bleu_english_by_hand():
    # 5 tokens each, one wrong at the end: p1..p4 = 4/5, 3/4, 2/3, 1/2, BP = 1;
    # BLEU = (4/5 * 3/4 * 2/3 * 1/2) ** (1/4) = 0.2 ** 0.25.
    assert m.sentence_bleu("a b c d e", "a b c d f") == pytest.approx(100 * 0.2**0.25, abs=1e-6)
    assert m.corpus_bleu(["a b c d e"], ["a b c d f"]) == pytest.approx(100 * 0.2**0.25, abs=1e-6)


def test_bleu_chinese_tokenizes_characters():
    # 7 characters each, the last differs: p1..p4 = 6/7, 5/6, 4/5, 3/4 → product 3/7.
    assert m.bleu_tokenizer(["华夏基金很好的"]) == "zh"
    assert m.sentence_bleu("华夏基金很好啊", "华夏基金很好的") == pytest.approx(
        100 * (3 / 7) ** 0.25, abs=1e-6
    )
    assert m.sentence_bleu(REF_ZH, REF_ZH) == pytest.approx(100.0)
    assert m.corpus_bleu(["完全不同"], ["华夏基金"]) == 0.0


def test_summarize_means_and_corpus_bleu():
    pairs = [("华夏基金很好啊", "华夏基金很好的"), ("华夏", "华夏")]
    rows = [m.score(a, r).as_dict() for a, r in pairs]
    summary = m.summarize(pairs, rows)
    assert summary["exact_match"] == 0.5
    assert summary["char_f1"] == pytest.approx((6 / 7 + 1.0) / 2, abs=1e-4)
    assert 0 < summary["bleu"] < 100
