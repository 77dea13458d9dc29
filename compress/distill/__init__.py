"""Knowledge distillation from a teacher into the (pruned) student."""
