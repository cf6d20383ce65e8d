"""The research questions as commands: eval (video->text->video), sweep-steps, compress, compare."""
