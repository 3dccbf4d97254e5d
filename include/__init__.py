"""Importable logic of the flights lakehouse: configuration, targets, quality, training, warehouse."""
