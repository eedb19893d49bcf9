#!/usr/bin/perl
# rewrite_cu.pl (kvzap CUDA emulator): turns one kernels/*.cu file into C++
# the emulator compiles. Usage: rewrite_cu.pl IN.cu OUT.cpp
#   kernel<<<g, b[, smem[, stream]]>>>(args)
#       -> kvz_emu_launch(kernel, "kernel", g, b[, smem[, stream]])(args)
#   extern __shared__ [__align__(n)] T name[];
#       -> T *name = (T *)kvz_emu_dynamic_smem();
# Everything else is left alone; lines keep their numbers and a #line
# directive names the .cu, so compiler messages point at the original.
use strict;
use warnings;

die "usage: rewrite_cu.pl IN.cu OUT.cpp\n" unless @ARGV == 2;
my ($in, $out) = @ARGV;
open(my $fh, '<', $in) or die "rewrite_cu.pl: $in: $!\n";
local $/;
my $src = <$fh>;
close $fh;

my $launches = 0;
$launches += ($src =~ s/\b([A-Za-z_]\w*(?:::[A-Za-z_]\w*)*)\s*<<</kvz_emu_launch($1, "$1", /g);
my $closes = ($src =~ s/>>>/)/g);
die "rewrite_cu.pl: $in: $launches '<<<' but $closes '>>>'\n" if $launches != $closes;
$src =~ s/\bextern\s+__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s+)?([A-Za-z_][\w\s]*?)\s+([A-Za-z_]\w*)\s*\[\s*\]\s*;/$1 *$2 = ($1 *)kvz_emu_dynamic_smem();/g;
die "rewrite_cu.pl: $in: an extern __shared__ declaration the rewriter does not understand\n"
    if $src =~ /\bextern\s+__shared__/;

my $tmp = "$out.tmp$$";
open(my $oh, '>', $tmp) or die "rewrite_cu.pl: $tmp: $!\n";
print $oh "#line 1 \"$in\"\n", $src;
close $oh or die "rewrite_cu.pl: $tmp: $!\n";
rename($tmp, $out) or die "rewrite_cu.pl: $out: $!\n";
