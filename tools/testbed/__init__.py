"""What the tests and the benchmarks both use, so neither imports the other.

``services``: real redis-server, moto S3 server, ``assetq worker`` processes
and a TCP proxy on free loopback ports. ``ocr_data``: OCR test images with
known ground truth (rendered lines, printed pages) and how to score a read.
"""
