"""Residency you can prove: audits of a cell's stores, signed and hash-chained receipts of them, canary scans."""
