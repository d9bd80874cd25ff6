"""Control over what is generated: the musical attributes a conditioned run reads from each piece
(``attributes``), its attribute vocabulary and the request read against it (``conditioning``), and
the infilling sentinels and bar spans (``infilling``). Leaf modules: no network, no data pipeline."""
