// Placeholder: replaced by the delay switch.
int main() { return 77; }
