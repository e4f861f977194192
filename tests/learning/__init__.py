"""The learning loop: labels, training views, train, replay, promote, the demo."""
