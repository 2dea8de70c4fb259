"""What every Ray-using layer shares: connecting to Ray and keeping its log lines off the console."""
