"""Fixed-vocabulary bundles and pruned token tables: two ways to shrink the text path for apps that know
their prompts (fully, or roughly) ahead of time.

`stored` reads what a bundle carries (the lookup, the pruned tokenizer); `build` makes it at export time and
measures it. Reading sits below writing: a bundle reader imports `stored` only.

Fixed vocabulary
    ``build_fixed_vocabulary(loaded, prompts, ctx, padding)`` runs the PyTorch text graph once, at export
    time, on a known list of prompts and stores the per-token text features the heads take
    (``text_features.npz``: fp16, or int8 with one scale per prompt and token) beside the list
    (``vocabulary.txt``). The app then needs no text encoder and no tokenizer:
    ``FixedVocabulary.lookup(prompt)`` returns ``text_features`` [1, L, 256] float32 and ``attention_mask``
    [1, L] int64, the heads' two text inputs. Prompts are matched after the tokenizer's own cleaning
    (:func:`litetext.tokenizer.clean_text`: ftfy, HTML entities, whitespace collapsed, lower case), so
    "Person " finds "person"; a prompt not in the list is a :class:`LitetextError` naming the list file and
    the closest names.

Pruned token table
    ``prune_vocabulary(corpus_prompts)`` keeps the tokens a corpus uses, the specials (start 49406, end
    49407, and 0, the upstream pad), the 256 byte tokens and the 256 byte+``</w>`` tokens (so every text still
    tokenizes), and every token the kept ones are built from through BPE merges (their merge ancestors).
    The merges kept are exactly those whose output is kept (in their original rank order).

    Why that rule gives identical ids on covered text: in CLIP's table each token is the output of exactly one
    merge, so the only way BPE makes a kept token t is through t's merge, whose inputs are made through theirs:
    every token BPE makes on the way to t is one of t's ancestors, kept. BPE with the reduced merge list
    therefore finds, at every step, the same lowest-ranked pair as the full list (that pair's output is kept,
    so its merge is kept; the reduced list is a subset of the full one with the same ranks) and stops when it
    does. A word whose full tokenization uses only kept tokens gets the same tokens; any other word gets a
    coarser split that uses only kept tokens (bytes at worst), which is the closest the table can express.

    Ids are remapped old -> new in ascending old order (contiguous), so the bytes keep ids 0..511, the pad 0
    stays 0 and the end token stays the largest id. ``write_tokenizer_json`` writes a ``tokenizers`` file with
    the NEW ids. The token table is cut in PyTorch before export (``build_graph(..., kept_ids=...)``), so every
    target gets the pruned graph: ``export_bundle(..., prune_vocabulary=corpus)`` writes it with that
    tokenizer.json, pruned_tokens.json (the kept old ids) and the manifest's ``text_path``, and
    :class:`PrunedTokenizer` is what ``Bundle.tokenizer()`` gives for it. A prompt whose tokens are all kept
    gives exactly the unpruned features; the others are reported (:func:`pruned_figures`), not gated.
"""
