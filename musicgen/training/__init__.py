from musicgen.training.modules import CausalLM, LanguageModelModule, Seq2OneLM

__all__ = ["CausalLM", "LanguageModelModule", "Seq2OneLM"]
