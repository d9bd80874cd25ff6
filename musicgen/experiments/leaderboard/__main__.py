from musicgen.experiments.leaderboard import main

main()
