"""Product quantization: the soft quantizer with codebook attention (``quantizer``), the
retrieval index of uint8 codes with asymmetric distance search (``index``) and its compiled
scan (``adc_kernel``, numba)."""
