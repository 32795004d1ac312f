from siem.cli import main

raise SystemExit(main())
