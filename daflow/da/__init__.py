"""Data assimilation: one filter interface (daflow.da.base), the classical filters, cycling."""
