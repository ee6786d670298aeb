"""Attacks that try to bring forgotten knowledge back, each scored on held-out forget items
beside the original (and a gold) model: the protocol (fit / held-out split, conditions, gap
recovery) and the attacks built on it."""
