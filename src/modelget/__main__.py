from modelget.cli import main

raise SystemExit(main())
