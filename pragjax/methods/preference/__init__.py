"""Preference optimisation on (chosen, rejected) pairs: DPO and its family (IPO, cDPO, robust DPO, SPPO, hinge, NCA).

`data` parses and tokenises pairs, `toy` builds the arithmetic world's pairs, `loss` is the loss builder and the
frozen-reference pass, `recipe` the `Method` and the run.
"""
