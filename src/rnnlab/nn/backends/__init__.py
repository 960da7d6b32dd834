"""What runs a recurrent layer: the reference loop, the pure-torch fused path, the C++ kernels."""
