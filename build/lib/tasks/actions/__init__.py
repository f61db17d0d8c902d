"""Actions from game state: the seed's inference, training targets, quality verdicts, labels."""
