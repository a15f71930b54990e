"""Physical device models, fraud and drift scenarios with ground truth, and servers for them."""
